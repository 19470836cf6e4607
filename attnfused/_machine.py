"""What Linux says about the CPU: /proc/cpuinfo's first processor and cpu0's caches in sysfs.

Read by the ``cpu`` provider's rules (vendor, L2 size: attnfused/kernels/extension.py) and recorded
with the CPU benchmarks (attnfused/bench/report.py), since the measurements behind both differed
between the dev VMs. Every reader returns what it could read and nothing where the files are
absent (other systems)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

CPUINFO = Path("/proc/cpuinfo")
CPU0_CACHES = Path("/sys/devices/system/cpu/cpu0/cache")


def cpu_fields(cpuinfo: Path = CPUINFO) -> dict[str, str]:
    """The first processor's ``key: value`` lines (``{"vendor_id": "AuthenticAMD", ...}``)."""
    fields: dict[str, str] = {}
    try:
        with open(cpuinfo) as f:
            for line in f:
                if not line.strip():
                    if fields:  # the first processor's block is enough
                        break
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu0_caches(caches: Path = CPU0_CACHES) -> dict[str, str]:
    """cpu0's caches by level and type, sizes as sysfs writes them: ``{"L1d": "48K", "L1i": "32K",
    "L2": "1024K", "L3": "32768K"}`` (unified ones without a suffix)."""
    sizes: dict[str, str] = {}
    try:
        for index in sorted(caches.glob("index*")):
            level, kind, size = ((index / n).read_text().strip() for n in ("level", "type", "size"))
            sizes[f"L{level}" + {"Data": "d", "Instruction": "i"}.get(kind, "")] = size
    except OSError:
        pass
    return sizes


def size_bytes(size: str) -> Optional[int]:
    """A sysfs size ("1024K", "2M", "512") in bytes; None if it is not one."""
    try:
        return int(size.rstrip("KM")) * {"K": 1 << 10, "M": 1 << 20}.get(size[-1:], 1)
    except ValueError:
        return None
