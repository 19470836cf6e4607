"""Count the global-memory traffic of a callable: Triton kernels (interpreted) and ATen ops.

:func:`count_traffic` runs ``fn(*args, **kwargs)`` and adds up the bytes it requests from global
memory, in two parts:

* **Kernel bytes** — every load and store executed by a Triton kernel running in the Triton
  interpreter (``TRITON_INTERPRET=1`` set before the kernels were first imported). Each mask-true
  lane counts once, at the element size of the pointer's element type: a ``[BLOCK_C, BLOCK_P]``
  tile load with mask ``m`` adds ``m.sum() * elem_size`` bytes. Masked-off lanes cost nothing.
  The bytes are also split by the tensor the lane points into: tensors with
  ``numel() >= full_numel`` ("full-size": ``x``, ``y``, ``dy``, ``dx``) versus the rest ("small":
  gates, pooled stats, argmax indices). Kernels launched as compiled GPU code are *not* seen (the
  counter cannot look inside them); their launches are not recorded either.
* **ATen bytes** — every ATen op executed while ``fn`` runs (seen through a
  :class:`~torch.utils._python_dispatch.TorchDispatchMode`, i.e. below autograd, so the ops of an
  eager backward are seen too) that has a tensor input or output with ``numel() >= full_numel``.
  Only those full-size tensors are counted: inputs as reads, outputs as writes. Not counted:
  allocation-only ops (``aten.empty*``, ``aten.new_empty*``, ...), views and other ops whose
  outputs alias their inputs (``view``, ``permute``, ``expand``, ``detach``, ``_unsafe_view``, a
  ``contiguous``/``to`` that returns its input, ...), metadata queries, the bookkeeping ops the
  Triton interpreter itself runs around a launch, and ops outside the ``aten``/``prims``
  namespaces (custom ops such as ``attnfused::attention``): those are re-dispatched with the
  counter still active, so the ATen ops *inside* their implementations are counted instead.
  Write-only in-place ops (``copy_``, ``fill_``, ``zero_``) count no read of their destination;
  ``out=`` arguments count as writes only. A tensor given twice to one op is read once.

The interpreter hooks are process-wide while a counter is active: interpreted kernels launched by
other threads meanwhile are counted too (the ATen side is per thread, as dispatch modes are, plus
the autograd engine's threads, which inherit the mode).

What this is not: a cache model. Every requested byte counts, so re-reads that a GPU would serve
from L1/L2 (a small ``[B, C]`` gate reloaded by every tile of a kernel, or a second pass over a
sample that is still in L2) are counted as if they came from DRAM. Full-size numbers are therefore
an upper bound on DRAM traffic for the streaming design, and the "resident" designs of DESIGN.md §5
look no better here than streaming ones. An expanded (stride-0) input is still "full-size" (its
``numel`` decides), but an ATen read of it counts only its distinct elements (stride-0 dimensions
once); kernel loads are counted per lane, so a kernel reading an expanded tensor counts every
repeated address.

Example::

    t = count_traffic(block, x, full_numel=x.numel())
    print(t.per_element(x.element_size(), x.numel()))   # passes over x, e.g. 3.0
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["Traffic", "KernelLaunch", "count_traffic", "TrafficCounter"]


@dataclass
class KernelLaunch:
    """One interpreted Triton launch: kernel name, number of programs, constexpr arguments, and
    the bytes it loaded/stored (``full_*``: the part that hit full-size tensors)."""

    name: str
    programs: int
    constexprs: dict = field(default_factory=dict)
    read_bytes: int = 0
    write_bytes: int = 0
    full_read_bytes: int = 0
    full_write_bytes: int = 0

    @property
    def small_bytes(self) -> int:
        return self.read_bytes + self.write_bytes - self.full_read_bytes - self.full_write_bytes


@dataclass
class Traffic:
    """Bytes requested from global memory while a callable ran (see the module docstring).

    ``kernel_*`` fields count interpreted Triton loads/stores (all tensors; ``kernel_full_*`` is the
    part that hit full-size tensors). ``aten_*`` fields count full-size tensors of ATen ops only.
    ``aten_ops`` lists, in order, the ATen ops that touched a full-size tensor and moved data;
    ``kernel_launches`` the interpreted kernel launches; ``result`` is what the callable returned.
    """

    full_numel: int = 0
    kernel_read_bytes: int = 0
    kernel_write_bytes: int = 0
    kernel_full_read_bytes: int = 0
    kernel_full_write_bytes: int = 0
    aten_read_bytes: int = 0
    aten_write_bytes: int = 0
    aten_ops: list = field(default_factory=list)
    kernel_launches: list = field(default_factory=list)
    result: Any = field(default=None, repr=False)

    # -- totals ----------------------------------------------------------------------------------
    @property
    def kernel_bytes(self) -> int:
        return self.kernel_read_bytes + self.kernel_write_bytes

    @property
    def kernel_full_bytes(self) -> int:
        """Kernel bytes that hit full-size tensors."""
        return self.kernel_full_read_bytes + self.kernel_full_write_bytes

    @property
    def kernel_small_bytes(self) -> int:
        """Kernel bytes that hit small tensors (gates, pooled stats, indices)."""
        return self.kernel_bytes - self.kernel_full_bytes

    @property
    def aten_bytes(self) -> int:
        return self.aten_read_bytes + self.aten_write_bytes

    @property
    def read_bytes(self) -> int:
        return self.kernel_read_bytes + self.aten_read_bytes

    @property
    def write_bytes(self) -> int:
        return self.kernel_write_bytes + self.aten_write_bytes

    @property
    def total_bytes(self) -> int:
        """Kernel bytes (full-size and small tensors) plus ATen bytes (full-size tensors)."""
        return self.kernel_bytes + self.aten_bytes

    @property
    def full_bytes(self) -> int:
        """Bytes to/from full-size tensors only: kernel (full part) plus ATen."""
        return self.kernel_full_bytes + self.aten_bytes

    @property
    def programs(self) -> int:
        """Total number of interpreted kernel programs launched."""
        return sum(k.programs for k in self.kernel_launches)

    # -- in units of N * elem_size ("passes over x") ----------------------------------------------
    def per_element(self, elem_size: int, numel: int, full_only: bool = False) -> float:
        """Total bytes (kernel + ATen; ``full_only``: full-size tensors only) in units of
        ``numel * elem_size``, i.e. the number of passes over a tensor of ``numel`` elements."""
        b = self.full_bytes if full_only else self.total_bytes
        return b / float(elem_size * numel)

    def passes_over(self, x: Tensor, full_only: bool = False) -> float:
        """:meth:`per_element` with ``x``'s element size and numel."""
        return self.per_element(x.element_size(), x.numel(), full_only)

    def summary(self, elem_size: int, numel: int) -> str:
        unit = float(elem_size * numel)
        return (
            f"{self.total_bytes / unit:.3f} N (kernel {self.kernel_full_bytes / unit:.3f} N full + "
            f"{self.kernel_small_bytes / unit:.3f} N small, aten {self.aten_bytes / unit:.3f} N "
            f"in {len(self.aten_ops)} ops, {len(self.kernel_launches)} launches / {self.programs} programs)"
        )


# ------------------------------------------------------------------------------------------------
# Triton interpreter hooks. Installed once while at least one counter is active (counters nest).

_lock = threading.RLock()
_active: list["TrafficCounter"] = []
_tls = threading.local()  # .launch_ranges: list of (start, end, numel) of the current launch's tensors
_saved_attrs: list[tuple[Any, str, Any]] = []


def _elem_size(ty: Any) -> int:
    bits = getattr(ty, "primitive_bitwidth", None)
    if bits is None:
        return 8  # pointers
    return max(1, (int(bits) + 7) // 8)


def _lanes(ptrs: Any, mask: Any):
    """Addresses of the mask-true lanes of a (block of) pointer(s), as a flat uint64 array."""
    import numpy as np

    addrs = np.asarray(ptrs.data)
    if mask is None:
        return addrs.reshape(-1)
    m = np.broadcast_to(np.asarray(mask.data).astype(bool, copy=False), addrs.shape)
    return addrs[m]


def _record(addrs, ty: Any, write: bool) -> None:
    n = int(addrs.size)
    if n == 0 or not _active:
        return
    esize = _elem_size(ty)
    ranges = getattr(_tls, "launch_ranges", None) or ()
    full_cache: dict[int, int] = {}
    for counter in list(_active):
        thr = counter.full_numel
        if thr not in full_cache:
            full_cache[thr] = _count_in(addrs, [(s, e) for s, e, k in ranges if k >= thr])
        counter._add_kernel(n * esize, full_cache[thr] * esize, write)


def _count_in(addrs, spans) -> int:
    if not spans:
        return 0
    import numpy as np

    hit = np.zeros(addrs.shape, dtype=bool)
    for s, e in spans:
        hit |= (addrs >= s) & (addrs < e)
    return int(hit.sum())


def _span(t: Tensor) -> Optional[tuple[int, int, int]]:
    """(first byte, one past the last byte, numel) of the memory a strided tensor covers."""
    try:
        if t.numel() == 0:
            return None
        start = t.data_ptr()
    except Exception:
        return None
    lo = hi = 0
    for size, stride in zip(t.shape, t.stride()):
        if stride >= 0:
            hi += (size - 1) * stride
        else:
            lo += (size - 1) * stride
    es = t.element_size()
    return start + lo * es, start + (hi + 1) * es, t.numel()


def _install_interpreter_hooks() -> None:
    try:
        from triton.runtime import interpreter as ti
    except Exception:  # no triton: only ATen traffic can be counted
        return
    B, G = ti.InterpreterBuilder, ti.GridExecutor
    orig_load, orig_store = B.create_masked_load, B.create_masked_store
    orig_rmw, orig_cas = B.create_atomic_rmw, B.create_atomic_cas
    orig_init, orig_call = G._init_args_hst, G.__call__

    def create_masked_load(self, ptrs, mask, other, *a, **k):
        _record(_lanes(ptrs, mask), ptrs.get_element_ty(), write=False)
        return orig_load(self, ptrs, mask, other, *a, **k)

    def create_masked_store(self, ptrs, value, mask, *a, **k):
        _record(_lanes(ptrs, mask), ptrs.get_element_ty(), write=True)
        return orig_store(self, ptrs, value, mask, *a, **k)

    def create_atomic_rmw(self, rmw_op, ptr, val, mask, *a, **k):
        lanes = _lanes(ptr, mask)
        _record(lanes, ptr.get_element_ty(), write=False)
        _record(lanes, ptr.get_element_ty(), write=True)
        return orig_rmw(self, rmw_op, ptr, val, mask, *a, **k)

    def create_atomic_cas(self, ptr, cmp, val, *a, **k):
        lanes = _lanes(ptr, None)
        _record(lanes, ptr.get_element_ty(), write=False)
        _record(lanes, ptr.get_element_ty(), write=True)
        return orig_cas(self, ptr, cmp, val, *a, **k)

    def _init_args_hst(self, args_dev, kwargs):
        args_hst, kwargs_hst = orig_init(self, args_dev, kwargs)
        flat, _ = tree_flatten((list(args_hst), dict(kwargs_hst)))
        ranges = []
        for t in flat:
            if not isinstance(t, Tensor) and isinstance(getattr(t, "base", None), Tensor):
                t = t.base  # triton.runtime.jit.TensorWrapper (reinterpreted dtype)
            if isinstance(t, Tensor):
                s = _span(t)
                if s is not None:
                    ranges.append(s)
        _tls.launch_ranges = ranges
        return args_hst, kwargs_hst

    def __call__(self, *args, **kwargs):
        # The interpreter's own host copies (new_empty/set_/copy_) are not the kernel's traffic.
        counters = list(_active)
        before = [c._kernel_snapshot() for c in counters]
        depth = getattr(_tls, "in_launch", 0)
        _tls.in_launch = depth + 1
        try:
            out = orig_call(self, *args, **kwargs)
        finally:
            _tls.in_launch = depth
            _tls.launch_ranges = None
        grid = getattr(ti.interpreter_builder, "grid_dim", (0, 0, 0))
        programs = int(grid[0]) * int(grid[1]) * int(grid[2])
        consts = {k: v for k, v in kwargs.items() if k in getattr(self, "constexprs", ())}
        name = getattr(self.fn, "__name__", str(self.fn))
        for counter, b in zip(counters, before):
            delta = [a - z for a, z in zip(counter._kernel_snapshot(), b)]
            counter.traffic.kernel_launches.append(KernelLaunch(name, programs, dict(consts), *delta))
        return out

    patches = [
        (B, "create_masked_load", create_masked_load),
        (B, "create_masked_store", create_masked_store),
        (B, "create_atomic_rmw", create_atomic_rmw),
        (B, "create_atomic_cas", create_atomic_cas),
        (G, "_init_args_hst", _init_args_hst),
        (G, "__call__", __call__),
    ]
    for owner, name, new in patches:
        if name not in owner.__dict__:  # another Triton version: leave what we do not know alone
            continue
        _saved_attrs.append((owner, name, owner.__dict__[name]))
        setattr(owner, name, new)


def _remove_interpreter_hooks() -> None:
    while _saved_attrs:
        owner, name, old = _saved_attrs.pop()
        setattr(owner, name, old)


def _in_launch() -> bool:
    return getattr(_tls, "in_launch", 0) > 0


# ------------------------------------------------------------------------------------------------
# ATen side.

# Ops that allocate without moving data, or only query/change metadata.
_NO_DATA = frozenset(
    {
        "empty", "empty_like", "empty_strided", "empty_permuted", "new_empty", "new_empty_strided",
        "set_", "resize_", "resize_as_", "as_strided_", "detach_", "squeeze_", "unsqueeze_", "t_",
        "transpose_", "swapdims_", "swapaxes_", "size", "stride", "numel", "dim", "storage_offset",
        "is_contiguous", "is_strides_like_format", "is_non_overlapping_and_dense", "is_same_size",
        "is_set_to", "record_stream", "_version",
    }
)
# In-place ops that overwrite their destination without reading it.
_WRITE_ONLY = frozenset(
    {
        "copy_", "fill_", "zero_", "normal_", "uniform_", "bernoulli_", "random_", "exponential_",
        "geometric_", "log_normal_", "cauchy_",
    }
)
_COUNTED_NAMESPACES = ("aten", "prims")


def _op_base_name(func) -> str:
    name = func._schema.name  # "aten::add_"
    return name.split("::", 1)[-1]


def _unique_bytes(t: Tensor) -> int:
    """Bytes of the distinct elements a tensor addresses: an expanded (stride-0) dimension counts
    once, so ``grad.expand(B, C, H, W)`` of a ``[B, C, 1, 1]`` gradient reads ``B*C`` elements."""
    n = 1
    for size, stride in zip(t.shape, t.stride()):
        if stride != 0:
            n *= size
    return n * t.element_size() if t.numel() else 0


def _storage_key(t: Tensor) -> Optional[int]:
    try:
        return t.untyped_storage().data_ptr()
    except Exception:
        return None


class _AtenCounter(TorchDispatchMode):
    def __init__(self, counter: "TrafficCounter") -> None:
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _in_launch():
            return func(*args, **kwargs)
        namespace = getattr(func, "namespace", None)
        if namespace not in _COUNTED_NAMESPACES:
            return self._redispatch_uncounted(func, args, kwargs)
        out = func(*args, **kwargs)
        self.counter._add_aten(func, args, kwargs, out)
        return out

    def _redispatch_uncounted(self, func, args, kwargs):
        """Run a non-ATen op (a custom op) below the Python key with this mode pushed again, so the
        ATen ops inside its implementation reach ``__torch_dispatch__`` and are counted."""
        flat, _ = tree_flatten((args, kwargs))
        keys = None
        for t in flat:
            if isinstance(t, Tensor):
                k = torch._C._dispatch_keys(t)
                keys = k if keys is None else keys | k
        if keys is None or not hasattr(func, "redispatch"):
            return func(*args, **kwargs)  # no tensor to pick a kernel from: inner ops go unseen
        keys = keys & torch._C._dispatch_keyset_full_after(torch._C.DispatchKey.Python)
        with self:
            return func.redispatch(keys, *args, **kwargs)


class TrafficCounter(contextlib.AbstractContextManager):
    """Context manager form of :func:`count_traffic`: ``with TrafficCounter(n) as c: ...`` then
    ``c.traffic``. Counters nest (each sees everything run inside it)."""

    def __init__(self, full_numel: int) -> None:
        if not isinstance(full_numel, int) or isinstance(full_numel, bool) or full_numel < 1:
            raise ValueError(f"full_numel must be a positive int, got {full_numel!r}")
        self.full_numel = full_numel
        self.traffic = Traffic(full_numel=full_numel)
        self._mode: Optional[_AtenCounter] = None
        self._stack: Optional[contextlib.ExitStack] = None

    # called by the hooks
    def _kernel_snapshot(self) -> tuple[int, int, int, int]:
        t = self.traffic
        return t.kernel_read_bytes, t.kernel_write_bytes, t.kernel_full_read_bytes, t.kernel_full_write_bytes

    def _add_kernel(self, nbytes: int, full_bytes: int, write: bool) -> None:
        t = self.traffic
        if write:
            t.kernel_write_bytes += nbytes
            t.kernel_full_write_bytes += full_bytes
        else:
            t.kernel_read_bytes += nbytes
            t.kernel_full_read_bytes += full_bytes

    def _add_aten(self, func, args, kwargs, out) -> None:
        thr = self.full_numel
        base = _op_base_name(func)
        if base in _NO_DATA or base.startswith("sym_"):
            return
        schema = func._schema
        # Which arguments are written (in place / out=) and which are out= only.
        written: set[int] = set()
        out_only: set[int] = set()
        pos = list(args)
        for i, a in enumerate(schema.arguments):
            val = pos[i] if i < len(pos) else kwargs.get(a.name)
            if val is None:
                continue
            info = a.alias_info
            if info is not None and info.is_write:
                vals, _ = tree_flatten(val)
                ids = {id(v) for v in vals if isinstance(v, Tensor)}
                written |= ids
                if a.is_out or (base in _WRITE_ONLY and i == 0):
                    out_only |= ids

        ins, _ = tree_flatten((args, kwargs))
        ins = [t for t in ins if isinstance(t, Tensor)]
        outs, _ = tree_flatten(out)
        outs = [t for t in outs if isinstance(t, Tensor)]
        if not any(t.numel() >= thr for t in ins) and not any(t.numel() >= thr for t in outs):
            return
        in_storages = {_storage_key(t) for t in ins if t.numel()} - {None, 0}

        write = 0
        seen: set[int] = set()
        moved = bool(written)
        for t in outs:
            if id(t) in seen:
                continue
            seen.add(id(t))
            aliased = id(t) not in written and _storage_key(t) in in_storages
            if not aliased:
                moved = True
            if t.numel() >= thr and not aliased:
                write += t.numel() * t.element_size()
        if not moved and outs:
            return  # a view / alias of an input (view, detach, a no-op .to or .contiguous)
        read = 0
        seen.clear()
        for t in ins:
            if id(t) in seen or id(t) in out_only:
                continue
            seen.add(id(t))
            if t.numel() >= thr:
                read += _unique_bytes(t)
        if read == 0 and write == 0:
            return
        tr = self.traffic
        tr.aten_read_bytes += read
        tr.aten_write_bytes += write
        tr.aten_ops.append(str(func))

    def __enter__(self) -> "TrafficCounter":
        stack = contextlib.ExitStack()
        with _lock:
            if not _active:
                try:
                    _install_interpreter_hooks()
                except BaseException:
                    _remove_interpreter_hooks()
                    raise
            _active.append(self)
        stack.callback(self._deactivate)
        try:
            self._mode = _AtenCounter(self)
            stack.enter_context(self._mode)
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def _deactivate(self) -> None:
        with _lock:
            if self in _active:
                _active.remove(self)
            if not _active:
                _remove_interpreter_hooks()

    def __exit__(self, *exc) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()
        return None


def count_traffic(fn: Callable[..., Any], *args: Any, full_numel: int, **kwargs: Any) -> Traffic:
    """Run ``fn(*args, **kwargs)`` and return the global-memory traffic it caused.

    ``full_numel``: tensors with at least this many elements are "full-size" (pass ``x.numel()``).
    Kernel bytes are counted for Triton kernels run by the interpreter (all tensors, with the
    full-size part split out); ATen bytes for full-size tensors of ATen ops (see the module
    docstring for what is and is not counted). The interpreter hooks and the dispatch mode are
    removed on return, also when ``fn`` raises. ``Traffic.result`` holds ``fn``'s return value.
    """
    with TrafficCounter(full_numel) as counter:
        result = fn(*args, **kwargs)
    t = counter.traffic
    t.result = result
    return t
