"""The compiled providers: ``"cpu"`` and ``"cuda"``, both backed by ``attnfused._C`` (``csrc/``).

The extension registers torch ops in the ``attnfused_C`` namespace, each with a CPU and (when
built with nvcc) a CUDA kernel: ``reduce_hw`` (pool_hw, dot_hw), ``reduce_c`` (pool_c, dot_c),
``pointwise`` (scale, grad_input) and the gates' thin convolutions, ``gate_conv`` and
``gate_conv_backward`` (one output channel; ECA's 1-D conv and CBAM's spatial conv), and the "fc"
channel gate (SE's and CBAM's MLP), ``fc_gate`` and ``fc_gate_backward``; plus two CPU-only ones
that run a forward sample by sample so that the scale's read of ``x`` hits cache (used by
:mod:`attnfused.ops.attention`): ``channel_stage``, SE's and ECA's forward (pool_hw, gate, scale),
and ``spatial_stage``, CBAM's spatial forward (pool_c, maps, conv, gate, scale; without a spatial
BatchNorm). This module adapts them to
:class:`~attnfused.kernels.KernelProvider` (semantics and traffic in :mod:`attnfused.kernels`); the
C++ entry points are in ``csrc/ops.cpp``, the kernels in ``csrc/cpu/`` and ``csrc/cuda/``.
"""

from __future__ import annotations

import importlib
import os
from typing import Optional

import torch
from torch import Tensor

from .._machine import CPU0_CACHES, CPUINFO, cpu0_caches, cpu_fields, size_bytes
from ._layout import bcp_strides, channels_fastest

__all__ = ["CPU", "CUDA", "CPUExtensionProvider", "CUDAExtensionProvider", "ExtensionProvider", "extension_status"]

_BUILD_HINT = (
    "build it with `pip install --no-build-isolation -e .` from the attnfused checkout (needs a C++ "
    "compiler, and nvcc for the CUDA kernels; see README, 'Backends')"
)


def _load():
    """``(module, None)`` or ``(None, reason)``; imported once."""
    if "module" not in _state:
        try:
            _state["module"] = importlib.import_module("attnfused._C")
            _state["error"] = None
        except ImportError as e:
            _state["module"], _state["error"] = None, f"attnfused._C could not be imported ({e})"
    return _state["module"], _state["error"]


_state: dict = {}
_ACTS = ("relu", "silu")  # the "fc" gate ops' act and gate codes (csrc/entry.h)
_GATE_FNS = ("sigmoid", "hard_sigmoid")


def extension_status() -> dict:
    """What this install has: ``{"built": bool, "cuda": bool, "error": str | None}``."""
    mod, err = _load()
    return {"built": mod is not None, "cuda": bool(mod is not None and mod.WITH_CUDA), "error": err}


class ExtensionProvider:
    """Kernel provider backed by the compiled extension, for one device type. ``namespace``: where
    its ops are registered (the test suite's CUDA emulator, tests/cuemu, registers the same ops
    under another)."""

    def __init__(self, name: str, device_type: str, namespace: str = "attnfused_C") -> None:
        self.name = name
        self.device_type = device_type
        self.namespace = namespace

    @property
    def ops(self):
        return getattr(torch.ops, self.namespace)

    def available(self) -> Optional[str]:
        """None when usable on this install, else why not."""
        mod, err = _load()
        if mod is None:
            return err
        if self.device_type == "cuda" and not mod.WITH_CUDA:
            return "attnfused._C was built without its CUDA kernels (no nvcc, or ATTNFUSED_NO_CUDA=1)"
        return None

    def check_device(self, device: torch.device) -> None:
        why = self.available()
        if why is not None:
            raise RuntimeError(f"attnfused backend {self.name!r} is not available: {why}; {_BUILD_HINT}")
        if device.type != self.device_type:
            raise RuntimeError(
                f"attnfused backend {self.name!r} runs on {self.device_type} tensors, got {device.type} tensors; "
                "use backend 'auto' to pick the provider for each tensor's device"
            )

    def pool_hw(self, x: Tensor, want_max: bool, want_arg: bool = True):
        h, w = x.shape[2:]
        divisor = float(max(h * w, 1))
        avg, mx, arg = self.ops.reduce_hw(x, None, None, None, None, None, want_max, divisor, want_arg)
        return (avg, mx, arg if want_arg else None) if want_max else (avg, None, None)

    def pool_c(self, x: Tensor, ca: Optional[Tensor]):
        mean, mx, arg = self.ops.reduce_c(x, None, ca, True, float(max(x.shape[1], 1)))
        return mx, mean, arg

    def dot_hw(self, dy, x, sa=None, da=None, dm=None, amc=None) -> Tensor:
        return self.ops.reduce_hw(dy, x, sa, da, dm, amc, False, 1.0)[0]

    def dot_c(self, dy: Tensor, x: Tensor, ca: Optional[Tensor]) -> Tensor:
        return self.ops.reduce_c(dy, x, ca, False, 1.0)[0]

    def scale(self, x: Tensor, ca: Optional[Tensor], sa: Optional[Tensor]) -> Tensor:
        return self.ops.pointwise(x, x, True, ca, sa, None, None, None, None, None, None)

    def grad_input(self, dy, like, ca=None, sa=None, da=None, dm=None, amc=None, davg=None, dmax=None, amp=None):
        return self.ops.pointwise(dy, like, False, ca, sa, da, dm, amc, davg, dmax, amp)

    def gate_conv(self, maps: Tensor, weight: Tensor, bias: Optional[Tensor], padding: tuple[int, int]) -> Tensor:
        """``F.conv2d(maps, weight, bias, padding=padding)`` for one output channel (the gates' thin
        convolutions, ``attnfused_C::gate_conv``), which :mod:`attnfused.ops._gates` uses when a
        provider has it."""
        return self.ops.gate_conv(maps.contiguous(), weight.contiguous(), _dense(bias), padding[0], padding[1])

    def gate_conv_backward(
        self, dz: Tensor, maps: Tensor, weight: Tensor, padding: tuple[int, int], want_bias: bool
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(d maps, d weight, d bias; empty without ``want_bias``) of :meth:`gate_conv`."""
        return self.ops.gate_conv_backward(
            dz.contiguous(), maps.contiguous(), weight.contiguous(), padding[0], padding[1], want_bias
        )

    def fc_gate(
        self, s: Tensor, w: dict, n: int, act: str, gate_fn: str
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(ca, z, h)`` of :func:`attnfused.ops._gates.channel_forward` for ``gate == "fc"``: ``s``
        the stacked statistics ``[n*B, C]``, ``w`` the gate's weights (w1, b1, w2, b2, in the
        accumulation dtype), ``n`` how many statistics are stacked."""
        return self.ops.fc_gate(
            s.contiguous(), w["w1"].contiguous(), _dense(w["b1"]), w["w2"].contiguous(), _dense(w["b2"]), n,
            _ACTS.index(act), _GATE_FNS.index(gate_fn),
        )

    def fc_gate_backward(
        self, dca: Tensor, s: Tensor, z: Tensor, ca: Tensor, h: Tensor, w: dict, n: int, act: str, gate_fn: str
    ) -> tuple[Tensor, Tensor, Optional[Tensor], Tensor, Optional[Tensor]]:
        """``(ds [n*B, C], dw1, db1 or None, dw2, db2 or None)`` of :meth:`fc_gate` from ``dca =
        dL/dca`` and its outputs."""
        has_b1, has_b2 = w["b1"] is not None, w["b2"] is not None
        ds, dw1, db1, dw2, db2 = self.ops.fc_gate_backward(
            dca.contiguous(), s.contiguous(), z.contiguous(), ca.contiguous(), h.contiguous(),
            w["w1"].contiguous(), w["w2"].contiguous(), n, has_b1, has_b2,
            _ACTS.index(act), _GATE_FNS.index(gate_fn),
        )
        return ds, dw1, db1 if has_b1 else None, dw2, db2 if has_b2 else None


def _without_gate_conv(provider: ExtensionProvider) -> ExtensionProvider:
    """``provider`` with its gates on F.conv*d (cuDNN on CUDA): ``_gates`` looks the methods up with
    getattr and takes None for absent."""
    provider.gate_conv = None  # type: ignore[assignment]
    provider.gate_conv_backward = None  # type: ignore[assignment]
    return provider


def _cpu_vendor() -> str:
    """The CPU's vendor string as Linux reports it ("GenuineIntel", "AuthenticAMD", ...), "" if
    unknown. Read once: the CPU forwards ask on every call, and reading /proc/cpuinfo takes tens of
    microseconds."""
    if "vendor" not in _state:
        _state["vendor"] = cpu_fields(_CPUINFO).get("vendor_id", "")
    return _state["vendor"]


_CPUINFO = CPUINFO


def _default_fc_gate_max_rows() -> int:
    """How many stacked rows the "cpu" provider's own "fc" gate kernels take (MKL's above).

    Timed with ``benchmarks/fc_gate_bench.py --device cpu`` (fp32, C = 1024 / 2048, R = C / 16, 2
    threads): on an AMD EPYC (Zen 3) VM they were 1.4-2.5x faster than MKL per direction at 8-16
    rows, 1.0-1.2x forward + backward at 32-64, 1.2-1.6x slower at 128-256
    (benchmarks/results/cpu-2026-12-02-amd/fc_gate); on an Intel Xeon (AVX-512) VM MKL was as fast at
    8 rows and 1.3-2.7x faster from 16 (benchmarks/results/cpu-2026-12-02-intel-s11/fc_gate; the kernels
    use AVX2 without FMA so that their sums do not depend on the machine); on an AMD EPYC (Zen 5,
    AVX-512) VM, over two runs, MKL's time over the kernels' per direction was 1.1-2.3 at 8-16
    rows, 0.84-1.49 at 32 and 0.76-1.48 at 64 (noisy; MKL ahead in one run's backward), 0.69-1.12
    at 128-256 (benchmarks/results/cpu-2026-12-03-amd-zen5/fc_gate). The rule goes by vendor,
    what told the measured machines apart (MKL chooses its code paths by CPU): 0 (MKL always) on
    Intel, 64 elsewhere.
    ``ATTNFUSED_CPU_FC_GATE=0`` / ``1`` forces MKL / the kernels (up to 64 rows)."""
    forced = os.environ.get("ATTNFUSED_CPU_FC_GATE")
    if forced in ("0", "1"):
        return 64 if forced == "1" else 0
    return 0 if _cpu_vendor() == "GenuineIntel" else 64


class CPUExtensionProvider(ExtensionProvider):
    """The "cpu" provider: the passes, the gates' thin convolutions (``csrc/cpu/gate_conv.cpp``:
    oneDNN is slow on them), the "fc" channel gate (``csrc/cpu/fc_gate.cpp``: one op per direction
    where F.linear and aten's elementwise ops take 4-6 forward and ~10 backward, its products
    written for the gate's few rows, on which MKL's GEMMs were slow on AMD machines), and the
    forwards' sample-by-sample stages (``csrc/cpu/stages.cpp``)."""

    # The "fc" gate's own kernels run up to this many stacked rows (n B), MKL's above
    # (attnfused/ops/_gates.py); 0: always MKL. Machine-dependent: _default_fc_gate_max_rows.
    fc_gate_max_rows: Optional[int] = _default_fc_gate_max_rows()

    def dense_grad(self, dy: Tensor, x: Tensor) -> Tensor:
        """``dy`` for the backward's passes: as it comes where it is unit-stride along the axis
        ``x``'s rows run (H*W for NCHW, C for channels_last), else one copy in ``x``'s layout: a dy
        in the other layout through ``pointwise`` with no terms (32 x 32 tiles, csrc/cpu/pointwise.cpp
        copy_tiles), any other (the stride-0 gradient of ``y.sum()``) through aten. The passes'
        vectorised loops need those unit-stride rows; their generic loops cost more than the copy.
        SE avg forward + backward at 8 x 512 x 28^2 fp32, NCHW x, on the Zen 5 VM: an expanded dy
        5.7 -> 1.75 ms (NCHW dy: 1.3-1.45, eager 3.6-3.9; one process each); a channels_last dy 8.0
        ms in the generic loops, then in one process 3.9 with aten's copy and 2.45 with the tiles."""
        cl = channels_fastest(bcp_strides(x)[1])
        dv, strides = bcp_strides(dy)
        if strides[1 if cl else 2] == 1:
            return dv
        if strides[2 if cl else 1] == 1 and dy.dtype == x.dtype:
            return self.ops.pointwise(dv, x, True, None, None, None, None, None, None, None, None)
        return dy.contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)

    def channel_stage(self, x: Tensor, cs, w: dict, want_arg: bool) -> Optional[tuple[Tensor, ...]]:
        """SE's and ECA's forward sample by sample (``csrc/cpu/stages.cpp``): ``(y, avg, mx, amp, ca,
        z, h)`` equal to pool_hw + :func:`attnfused.ops._gates.channel_forward` + scale (``avg`` always
        filled, ``mx`` / ``amp`` empty without a max pool, ``amp`` also without ``want_arg``, ``h``
        empty but for the "fc" gate), each sample's second read of ``x`` from its core's cache. None
        where the rule does not take the block (:func:`channel_stage_schedule`, which also picks how
        the samples are split over the threads): the caller runs the passes."""
        schedule = channel_stage_schedule(x, cs, w)
        if schedule is None:
            return None
        return self.ops.channel_stage(x, *_channel_stage_args(cs, w), want_arg, schedule == "shared")

    def stage_takes_gate(self, x: Tensor, cs, w: dict) -> bool:
        """:func:`stage_takes_gate`: whether :meth:`spatial_stage` can run this channel gate too."""
        return stage_takes_gate(x, cs, w)

    def spatial_stage(
        self, x: Tensor, ca: Optional[Tensor], weight: Tensor, bias: Optional[Tensor], maps: str, hard: bool,
        channel: Optional[tuple] = None, want_arg: bool = True,
    ) -> tuple[Tensor, ...]:
        """CBAM's spatial stage forward without BatchNorm, sample by sample (csrc/cpu/stages.cpp):
        ``(y, maps, amc, sa, z)`` equal to pool_c + the maps + gate_conv + the gate + scale, with each
        sample's second read of ``x`` from cache. ``maps``: a SpatialSpec's ``maps``. ``channel``:
        ``(cs, w)`` to run CBAM's channel stage first for each sample as well (``ca`` None; where
        :func:`stage_takes_gate` allows it), which adds :meth:`channel_stage`'s ``(avg, mx, amp, ca,
        z, h)`` to the tuple. ``want_arg`` False (no backward follows): the maxima without their
        argmax (``amc`` and ``amp`` come back empty)."""
        kind = ("max_mean", "mean_max", "half_sum").index(maps)
        if channel is None:
            return self.ops.spatial_stage(x, ca, weight.contiguous(), _dense(bias), kind, hard, want_arg=want_arg)[:5]
        cs, w = channel
        return self.ops.spatial_stage(
            x, None, weight.contiguous(), _dense(bias), kind, hard, *_channel_stage_args(cs, w), want_arg
        )


def _channel_stage_args(cs, w: dict) -> tuple:
    """The channel gate's arguments of attnfused_C::channel_stage / spatial_stage (pool ... gate)."""
    fc = cs.gate == "fc"
    return (
        ("avg", "max", "avgmax").index(cs.pool), not fc, w["w1"].contiguous(), _dense(w["b1"]),
        w["w2"].contiguous() if fc else None, _dense(w["b2"]), _ACTS.index(cs.act), _GATE_FNS.index(cs.gate_fn),
    )


def _dense(t: Optional[Tensor]) -> Optional[Tensor]:
    """A small optional operand as the C++ ops take it: contiguous (a bias may be a strided view)."""
    return None if t is None else t.contiguous()


def stage_takes_gate(x: Tensor, cs, w: dict) -> bool:
    """Whether a sample-by-sample stage can run this channel gate: the gates it has (the "fc" gate,
    the zero-padded 1-D conv with an odd kernel; pools avg, max, avgmax), and for the "fc" gate
    weights no larger than a sample (each sample's gate reads both of them). That takes ResNet-50's
    stages (R = C / 16, fp32) but 7^2, where they are 5x a sample: SE avg forward at batch 8 on the
    Intel dev VM, same process, passes vs sample by sample: 0.51 -> 0.46 ms at 14^2 (weights 0.64x
    a sample), 0.40 -> 0.76 ms at 7^2."""
    if cs.pool not in ("avg", "max", "avgmax"):
        return False
    if cs.gate == "conv":
        return cs.conv_padding == "zeros" and w["w1"].shape[-1] % 2 == 1
    if cs.gate != "fc" or w["w2"] is None:
        return False
    b, c, h, wd = x.shape
    weight_bytes = (w["w1"].numel() + w["w2"].numel()) * w["w1"].element_size()
    return weight_bytes <= c * h * wd * x.element_size()


def channel_stage_schedule(x: Tensor, cs, w: dict) -> Optional[str]:
    """How :meth:`CPUExtensionProvider.channel_stage` runs this block: ``"shared"``, ``"per_thread"``,
    or None where it does not take it (the caller runs the passes). Both run each sample's pool,
    gate and scale back to back, so that the scale re-reads the sample from cache; both only on
    Intel CPUs:

    - ``"per_thread"``: a task owns whole samples, when every thread gets the same number of samples
      or at least four each (B = 3 on 2 threads would leave one idle a third of the time);
    - ``"shared"``: the samples one after another, each split over the threads by channel, when a
      sample is larger than one core's L2 (:func:`_l2_bytes`) but a thread's share of it is not,
      whatever the batch.

    Measured on the Intel dev VM (2 MB L2 per core, 480 MB L3 feeding a core at ~50 GB/s; fp32
    forward, batch 8, 2 threads, same process): SE avg at 256 x 56^2 (3.2 MB samples) 1.58 ms per
    thread -> 1.37 shared, ECA 1.57 -> 1.32; at 512 x 28^2 (1.6 MB) the two tied (SE avg 0.73 /
    0.76, ECA 0.717 / 0.714) and beat the passes (SE avg 0.886 -> 0.714; ECA at 1024 x 14^2 0.489
    -> 0.365); with smaller samples shared lost (ECA's stage alone at 1024 x 14^2 0.305 -> 0.334 ms,
    2048 x 7^2 0.161 -> 0.208: two joins per sample). On an AMD EPYC (Zen 5, 1 MB L2 per core, 32
    MB L3) VM, per thread against the passes (medians of 11 alternating rounds, two runs, ms):
    ECA tied, 0.875-0.914 / 0.875-0.924 at 56^2, 0.398 / 0.384-0.385 at 28^2, 0.131-0.167 /
    0.136-0.156 at 14^2, 0.109-0.110 / 0.114-0.115 at 7^2; SE avg lost where its per-sample gate
    re-reads the weights, 0.429-0.434 / 0.384-0.394 at 28^2, 0.188-0.192 / 0.161-0.162 at 14^2
    (0.877-0.902 / 0.893-0.934 at 56^2); the stage op alone took as long as its pool and scale ops
    in a row (0.117 / 0.114 ms at 8 x 1024 x 14^2). Shared lost to per thread at every size tried
    (ECA at 8 x C x 56^2, C = 64 ... 384, 0.77-4.6 MB samples, e.g. 0.515 / 0.431 ms at C = 128).
    That L3 feeds a core about as fast as its L2 (a 6.4 MB clone in 0.066 ms), so the re-read
    saves little. Hence the vendor, as for :func:`_default_fc_gate_max_rows`; other CPUs are
    unmeasured and run the passes. (CBAM's spatial stage, which fuses more, won on both.)"""
    b = x.shape[0]
    threads = torch.get_num_threads()
    if b == 0 or _cpu_vendor() != "GenuineIntel" or not stage_takes_gate(x, cs, w):
        return None
    l2 = _l2_bytes()
    sample = x[0].numel() * x.element_size()
    if threads > 1 and l2 is not None and sample > l2 >= -(-sample // threads):
        return "shared"
    if b % threads and b < 4 * threads:
        return None
    return "per_thread"


_CPU0_CACHES = CPU0_CACHES


def _l2_bytes() -> Optional[int]:
    """One core's L2 cache in bytes as Linux's sysfs gives it for cpu0, or None where it does not
    (then no stage runs shared). Read once."""
    if "l2" not in _state:
        caches = cpu0_caches(_CPU0_CACHES)
        size = caches.get("L2", caches.get("L2d"))
        _state["l2"] = None if size is None else size_bytes(size)
    return _state["l2"]


class CUDAExtensionProvider(ExtensionProvider):
    """The "cuda" provider: the passes, the gates' thin convolutions, and the "fc" channel gate
    (``csrc/cuda/fc_gate.cu``: two launches forward and three backward where F.linear and aten's
    elementwise ops take 4-6 forward and ~10 backward)."""


def _without_fc_gate(provider: ExtensionProvider) -> ExtensionProvider:
    """``provider`` with its "fc" gate on F.linear and aten's elementwise ops (cuBLAS on CUDA)."""
    provider.fc_gate = None  # type: ignore[attr-defined]
    provider.fc_gate_backward = None  # type: ignore[attr-defined]
    return provider


# The gate kernels replace the libraries' unless switched off (read at import), to time the two
# against each other: ATTNFUSED_CUDA_GATE_CONV=0 keeps F.conv*d (cuDNN) for the gates'
# convolutions (csrc/cuda/gate_conv.cu), ATTNFUSED_CUDA_FC_GATE=0 keeps F.linear (cuBLAS) and
# aten's elementwise ops for the "fc" gate (csrc/cuda/fc_gate.cu), ATTNFUSED_CPU_FC_GATE=0 the
# same on CPU (MKL; csrc/cpu/fc_gate.cpp; =1 its kernels even on Intel CPUs), ATTNFUSED_CPU_STAGES=0
# runs the CPU forwards as whole-batch passes instead of sample by sample (csrc/cpu/stages.cpp).
CPU = CPUExtensionProvider("cpu", "cpu")
if os.environ.get("ATTNFUSED_CPU_FC_GATE") == "0":
    _without_fc_gate(CPU)
if os.environ.get("ATTNFUSED_CPU_STAGES") == "0":
    CPU.channel_stage = None  # type: ignore[assignment]
    CPU.spatial_stage = None  # type: ignore[assignment]
CUDA = CUDAExtensionProvider("cuda", "cuda")
if os.environ.get("ATTNFUSED_CUDA_GATE_CONV") == "0":
    _without_gate_conv(CUDA)
if os.environ.get("ATTNFUSED_CUDA_FC_GATE") == "0":
    _without_fc_gate(CUDA)
