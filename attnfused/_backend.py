"""Backend selection: which implementation runs a block.

Names:

- ``"reference"``: the eager code in :mod:`attnfused.reference` (plain autograd).
- ``"triton"``: the Triton kernels. CUDA tensors run compiled kernels; CPU tensors run the Triton
  interpreter, which needs ``TRITON_INTERPRET=1`` set before the kernels are first used.
- ``"cuda"``, ``"cpu"``: the compiled extension ``attnfused._C`` (``csrc/``). Asking for one that
  this install did not build raises an error that says how to build it.
- ``"auto"`` (default): for CUDA tensors the Triton kernels (else the "cuda" provider when Triton is
  missing); for CPU tensors the "cpu" provider. Where none applies (e.g. CPU tensors without the
  extension), the reference, announced once per device type in a log line.

The choice is a process-wide setting (``set_backend``, ``use_backend``, or the environment variable
``ATTNFUSED_BACKEND`` read at import). It is a plain module global rather than a context variable so
that ``torch.compile`` can trace the routing without a graph break; ``use_backend`` is therefore not
thread-local.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from typing import Iterator

import torch

from .kernels import KernelProvider, load_provider, provider_names

__all__ = ["BACKENDS", "backend_names", "set_backend", "get_backend", "use_backend", "use_reference", "kernels_for"]

log = logging.getLogger("attnfused")

BACKENDS = ("auto", "reference") + provider_names()  # the built-in names


def backend_names() -> tuple[str, ...]:
    """Every valid backend name: :data:`BACKENDS` and providers registered since
    (:func:`attnfused.kernels.register_provider`)."""
    return ("auto", "reference") + provider_names()

_state = {"backend": "auto"}
_announced: set[str] = set()


def _check_name(name: str) -> str:
    if not isinstance(name, str) or name not in backend_names():
        raise ValueError(f"unknown attnfused backend {name!r}; choose one of {', '.join(backend_names())}")
    return name


def set_backend(name: str) -> None:
    """Select the implementation used by every attnfused block from now on."""
    _state["backend"] = _check_name(name)


def get_backend() -> str:
    """The backend name currently selected."""
    return _state["backend"]


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Context manager that selects ``name`` and restores the previous backend on exit."""
    previous = _state["backend"]
    set_backend(name)
    try:
        yield
    finally:
        _state["backend"] = previous


def _auto_table() -> dict[str, str | None]:
    """"auto"'s provider per device type, decided once at import so that routing stays a dict
    lookup (traceable by torch.compile). On CUDA Triton comes first, being the provider with the
    longest GPU test and benchmark record; "cuda" stands in when Triton is not installed."""
    from .kernels.extension import extension_status

    ext = extension_status()
    has_triton = importlib.util.find_spec("triton") is not None
    return {
        "cuda": "triton" if has_triton else ("cuda" if ext["cuda"] else None),
        "cpu": "cpu" if ext["built"] else None,
    }


_AUTO = _auto_table()


def _auto_provider(device: torch.device) -> str | None:
    """Provider ``"auto"`` picks for ``device``, or None where the reference is the best path."""
    return _AUTO.get(device.type)


def _announce_reference(device: torch.device) -> None:
    if device.type in _announced or torch.compiler.is_compiling():
        return
    _announced.add(device.type)
    why = "" if device.type != "cpu" else " (attnfused._C, the 'cpu' provider, is not built)"
    log.info("attnfused: no fused provider for %s tensors%s; backend 'auto' runs the eager reference", device.type, why)


def use_reference(x: torch.Tensor) -> bool:
    """Whether a block on ``x`` runs the eager reference under the current backend."""
    name = _state["backend"]
    if name == "reference":
        return True
    if name == "auto" and _auto_provider(x.device) is None:
        _announce_reference(x.device)
        return True
    return False


def kernels_for(device: torch.device) -> KernelProvider:
    """The kernel provider the current backend uses for tensors on ``device``.

    Only called by the fused ops, i.e. after :func:`use_reference` said no (or when an op is called
    directly, in which case ``"auto"``/``"reference"`` mean "the default provider for the device").
    """
    name = _state["backend"]
    if name in ("auto", "reference"):
        name = _auto_provider(device) or "triton"
    return load_provider(name, device)


_env = os.environ.get("ATTNFUSED_BACKEND")
if _env:
    set_backend(_env.strip())
