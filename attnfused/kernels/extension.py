"""The compiled providers: ``"cpu"`` and ``"cuda"``, both backed by ``attnfused._C`` (``csrc/``).

The extension registers torch ops in the ``attnfused_C`` namespace, each with a CPU and (when
built with nvcc) a CUDA kernel: ``reduce_hw`` (pool_hw, dot_hw), ``reduce_c`` (pool_c, dot_c),
``pointwise`` (scale, grad_input) and the gates' thin convolutions, ``gate_conv`` and
``gate_conv_backward`` (one output channel; ECA's 1-D conv and CBAM's spatial conv), and the "fc"
channel gate (SE's and CBAM's MLP), ``fc_gate`` and ``fc_gate_backward``; plus a CPU-only one,
``spatial_stage``, CBAM's spatial forward (pool_c, maps, conv, gate, scale) run
sample by sample so that the scale's read of ``x`` hits cache (used by
:mod:`attnfused.ops.attention` without a spatial BatchNorm). This module adapts them to
:class:`~attnfused.kernels.KernelProvider` (semantics and traffic in :mod:`attnfused.kernels`); the
C++ entry points are in ``csrc/ops.cpp``, the kernels in ``csrc/cpu/`` and ``csrc/cuda/``.
"""

from __future__ import annotations

import importlib
import os
from typing import Optional

import torch
from torch import Tensor

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
        return self.ops.gate_conv(maps.contiguous(), weight.contiguous(), bias, padding[0], padding[1])

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
            s.contiguous(), w["w1"].contiguous(), w["b1"], w["w2"].contiguous(), w["b2"], n,
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


class CPUExtensionProvider(ExtensionProvider):
    """The "cpu" provider: the passes, the gates' thin convolutions (``csrc/cpu/gate_conv.cpp``:
    oneDNN is slow on them), the "fc" channel gate (``csrc/cpu/fc_gate.cpp``: one op per direction
    where F.linear and aten's elementwise ops take 4-6 forward and ~10 backward, its products
    written for the gate's few rows, on which MKL's GEMMs were slow on some machines), and CBAM's
    fused spatial stage."""

    # The "fc" gate's products run here up to this many stacked rows (n B: batch 64 for SE, 32 for
    # CBAM), MKL's above (attnfused/ops/_gates.py). fp32, C = 1024 / 2048, R = C / 16, 2 threads of an
    # AMD EPYC (Zen 3) VM (benchmarks/fc_gate_bench.py --device cpu, benchmarks/results/
    # cpu-2026-12-02-amd/fc_gate): 1.4-2.5x faster than MKL per direction at 8-16 rows, 1.0-1.2x
    # forward + backward at 32-64, 1.2-1.6x slower at 128-256. Not timed on an Intel machine.
    fc_gate_max_rows: Optional[int] = 64

    def spatial_stage(
        self, x: Tensor, ca: Optional[Tensor], weight: Tensor, bias: Optional[Tensor], maps: str, hard: bool
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """CBAM's spatial stage forward without BatchNorm, sample by sample (csrc/cpu/spatial_stage.cpp):
        ``(y, maps, amc, sa, z)`` equal to pool_c + the maps + gate_conv + the gate + scale, with each
        sample's second read of ``x`` from cache. ``maps``: a SpatialSpec's ``maps``."""
        kind = ("max_mean", "mean_max", "half_sum").index(maps)
        return self.ops.spatial_stage(x, ca, weight, bias, kind, hard)


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
# same on CPU (MKL; csrc/cpu/fc_gate.cpp).
CPU = CPUExtensionProvider("cpu", "cpu")
if os.environ.get("ATTNFUSED_CPU_FC_GATE") == "0":
    _without_fc_gate(CPU)
CUDA = CUDAExtensionProvider("cuda", "cuda")
if os.environ.get("ATTNFUSED_CUDA_GATE_CONV") == "0":
    _without_gate_conv(CUDA)
if os.environ.get("ATTNFUSED_CUDA_FC_GATE") == "0":
    _without_fc_gate(CUDA)
