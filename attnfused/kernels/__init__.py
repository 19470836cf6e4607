"""Kernel providers: the full-size passes over ``x`` / ``dy``, one provider per backend.

A provider moves the big tensors; everything on ``[B, C]`` / ``[B, H*W]`` (the gates, their
gradients) is computed once, for all providers, in :mod:`attnfused.ops`. Every pass reads a 4-D
tensor as ``[B, C, P]`` with ``P = H*W`` and arbitrary strides (NCHW and channels_last both map to
that view without a copy). Small tensors are contiguous in the accumulation dtype (fp32, or fp64
for fp64 inputs); argmax indices are int32.

The passes (``m`` is the per-element "mid" gradient of CBAM's spatial stage,
``m[c,p] = dy*sa[p] + da[p] + dm[p]*[c == amc[p]]``; absent terms drop out):

=================  ======================================================  =================
pass               computes                                                traffic
=================  ======================================================  =================
``pool_hw``        ``mean_P x``, ``max_P x`` and its first argmax          read N
``pool_c``         ``max_C x1``, ``mean_C x1``, argmax; ``x1 = x*ca``       read N
``dot_hw``         ``sum_P m * x``                                         read 2N
``dot_c``          ``sum_C dy * x * ca``                                   read 2N
``scale``          ``y = (x * ca) * sa``                                   read N, write N
``grad_input``     ``dx = m * ca + davg[c] + dmax[c]*[p == amp[c]]``        read N, write N
=================  ======================================================  =================
"""

from __future__ import annotations

import importlib
from typing import Optional, Protocol

import torch
from torch import Tensor

__all__ = ["KernelProvider", "load_provider", "provider_available", "provider_names", "register_provider"]


class KernelProvider(Protocol):
    """What a backend implements. See the module docstring for the semantics of each pass."""

    name: str

    def pool_hw(
        self, x: Tensor, want_max: bool, want_arg: bool = True
    ) -> tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        """(mean, max or None, argmax or None); ``want_arg=False`` (a forward no backward follows)
        lets a provider skip the argmax and return None or an empty tensor for it."""
        ...

    def pool_c(self, x: Tensor, ca: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]: ...

    def dot_hw(
        self,
        dy: Tensor,
        x: Tensor,
        sa: Optional[Tensor] = None,
        da: Optional[Tensor] = None,
        dm: Optional[Tensor] = None,
        amc: Optional[Tensor] = None,
    ) -> Tensor: ...

    def dot_c(self, dy: Tensor, x: Tensor, ca: Optional[Tensor]) -> Tensor: ...

    def scale(self, x: Tensor, ca: Optional[Tensor], sa: Optional[Tensor]) -> Tensor: ...

    def grad_input(
        self,
        dy: Tensor,
        like: Tensor,
        ca: Optional[Tensor] = None,
        sa: Optional[Tensor] = None,
        da: Optional[Tensor] = None,
        dm: Optional[Tensor] = None,
        amc: Optional[Tensor] = None,
        davg: Optional[Tensor] = None,
        dmax: Optional[Tensor] = None,
        amp: Optional[Tensor] = None,
    ) -> Tensor: ...

    # Optional (absent or None: the library ops attnfused/ops/_gates.py names):
    #   ``gate_conv`` / ``gate_conv_backward``, the gates' thin convolutions ("cpu" and "cuda"
    #   providers; else F.conv*d);
    #   ``fc_gate`` / ``fc_gate_backward``, the whole "fc" channel gate ("cuda" and "cpu"; else
    #   F.linear and elementwise ops);
    #   ``spatial_stage``, CBAM's spatial forward in one call ("cpu"; attnfused/ops/attention.py;
    #   else pool_c + the gate + scale);
    #   ``dense_grad(dy, x)``, ``dy`` as the backward's passes read it fast ("cpu": a copy in x's
    #   layout where dy's rows are not unit-stride; else dy as it comes).


# name -> (module, attribute) of the provider object. "cuda" and "cpu" come from the compiled
# extension attnfused._C (csrc/); they report themselves unavailable when it was not built.
_PROVIDERS = {
    "triton": ("attnfused.kernels.triton", "PROVIDER"),
    "cuda": ("attnfused.kernels.extension", "CUDA"),
    "cpu": ("attnfused.kernels.extension", "CPU"),
}
_loaded: dict[str, KernelProvider] = {}
_registered: list[str] = []


def provider_names() -> tuple[str, ...]:
    """The built-in providers' names, then those added by :func:`register_provider`."""
    return tuple(_PROVIDERS) + tuple(_registered)


def register_provider(name: str, provider: KernelProvider) -> None:
    """Add an out-of-tree provider (the test suite registers its CPU emulator of the CUDA
    kernels, tests/cuemu, as "cuemu"); ``name`` then works as a backend name everywhere. It must
    implement :class:`KernelProvider` and ``check_device(device)`` (raise ``RuntimeError`` where it
    cannot run). Built-in names cannot be replaced; registering a name again replaces it."""
    if not isinstance(name, str) or not name.isidentifier() or name in _PROVIDERS or name in ("auto", "reference"):
        raise ValueError(f"cannot register an attnfused provider under the name {name!r}")
    _loaded[name] = provider
    if name not in _registered:
        _registered.append(name)


def _get(name: str) -> KernelProvider:
    provider = _loaded.get(name)
    if provider is None:
        module, attr = _PROVIDERS[name]
        try:
            provider = getattr(importlib.import_module(module), attr)
        except ImportError as e:  # e.g. triton missing from this torch install
            raise RuntimeError(f"attnfused backend {name!r} is not available: {e}") from e
        _loaded[name] = provider
    return provider


def provider_available(name: str, device: torch.device) -> bool:
    """Whether provider ``name`` can run on ``device`` in this install (never raises)."""
    try:
        _get(name).check_device(device)
    except RuntimeError:
        return False
    return True


def load_provider(name: str, device: torch.device) -> KernelProvider:
    """Import provider ``name`` and check it can run on ``device``; raise ``RuntimeError`` if not."""
    provider = _get(name)
    provider.check_device(device)
    return provider
