"""The Triton provider's two pointwise kernels (attnfused/kernels/triton/_pointwise.py) agree.

``pointwise_flat_kernel`` takes dense NCHW launches whose rows cannot be aligned (7x7), walking
memory order in 16-byte vectors with (b, c, p) decoded once per vector. The block tests reach it
only on the shapes they happen to use, so here every term combination of ``scale`` and
``grad_input`` runs on shapes where vectors cross row and sample ends and must match the tiled
kernel bit for bit (the same arithmetic per element); which kernel ran is checked.
"""

from __future__ import annotations

import pytest
import torch

from attnfused.kernels import triton as tk

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() and not tk.INTERPRETED, reason="Triton needs a GPU or the interpreter"
)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# (B, C, H, W): 49-element rows (vectors of 4 or 2 cross row ends), rows of 5 (just over a vector
# of 4), one sample, many samples; samples of an odd number of elements (147, 5: vectors also
# cross sample ends)
SHAPES = [(2, 8, 7, 7), (3, 4, 1, 5), (1, 12, 3, 3), (5, 4, 7, 7), (4, 3, 7, 7), (4, 1, 1, 5)]


def _terms(b, c, p, dtype, which, seed=0):
    g = torch.Generator().manual_seed(seed)
    acc = torch.float64 if dtype == torch.float64 else torch.float32

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=acc).to(DEVICE)

    def idx(n, *shape):
        return torch.randint(0, n, shape, generator=g, dtype=torch.int32).to(DEVICE)

    made = {"ca": r(b, c), "sa": r(b, p), "da": r(b, p), "dm": r(b, p), "amc": idx(c, b, p), "davg": r(b, c),
            "dmax": r(b, c), "amp": idx(p, b, c)}
    return {k: v for k, v in made.items() if k in which}


CASES = [  # (forward?, terms)
    (True, ("ca",)), (True, ("sa",)), (True, ("ca", "sa")),
    (False, ("ca", "davg")), (False, ("ca", "dmax", "amp")), (False, ("sa", "da", "dm", "amc")),
    (False, ("ca", "sa", "da", "dm", "amc", "davg", "dmax", "amp")),
]


def _count_launches(monkeypatch) -> dict[str, int]:
    counts = {"pointwise_flat_kernel": 0, "pointwise_kernel": 0}
    for name in counts:
        kernel = getattr(tk, name)

        def run(*args, _original=kernel.run, _name=name, **kwargs):
            counts[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(kernel, "run", run, raising=False)
    return counts


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64] + ([torch.bfloat16] if DEVICE == "cuda" else []), ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_flat_kernel_matches_the_tiled_one(shape, dtype, monkeypatch):
    b, c, h, w = shape
    counts = _count_launches(monkeypatch)
    flat_ok = tk._flat_ok
    force_tiled = [False]
    monkeypatch.setattr(tk, "_flat_ok", lambda *args: not force_tiled[0] and flat_ok(*args))
    for forward, which in CASES:
        x = torch.randn(shape, dtype=dtype).to(DEVICE)
        dy = torch.randn(shape, dtype=dtype).to(DEVICE)
        terms = _terms(b, c, h * w, dtype, which)

        def call(tiled: bool) -> torch.Tensor:
            force_tiled[0] = tiled
            before = dict(counts)
            out = tk.PROVIDER.scale(x, terms.get("ca"), terms.get("sa")) if forward else tk.PROVIDER.grad_input(dy, x, **terms)
            ran = [k for k in counts if counts[k] != before[k]]
            assert ran == ["pointwise_kernel" if tiled else "pointwise_flat_kernel"], (which, ran)
            return out

        assert torch.equal(call(False), call(True)), f"{which}: the flat and tiled kernels differ"


@pytest.mark.parametrize(
    "shape, fmt, want",
    [((2, 8, 7, 7), torch.contiguous_format, True),
     ((2, 8, 1, 3), torch.contiguous_format, False),  # rows shorter than a vector
     ((1, 3, 7, 7), torch.contiguous_format, False),  # 147 elements: not whole vectors
     ((2, 8, 7, 7), torch.channels_last, False)],  # not NCHW memory order
    ids=["7x7", "short-rows", "partial-vector", "channels_last"],
)
def test_flat_kernel_conditions(shape, fmt, want):
    x = torch.randn(shape).to(DEVICE).contiguous(memory_format=fmt)
    assert tk._flat_ok(x, torch.empty_like(x), shape[2] * shape[3], 4) is want


def test_flat_kernel_switch():
    """ATTNFUSED_TRITON_FLAT=0 (read at import) keeps the tiled kernel, to time the two."""
    import os
    import subprocess
    import sys

    code = (
        "import torch\nfrom attnfused.kernels import triton as tk\n"
        "x = torch.randn(2, 8, 7, 7)\nprint(tk._flat_ok(x, torch.empty_like(x), 49, 4))\n"
    )
    for value, want in (("0", "False"), ("1", "True")):
        env = dict(os.environ, ATTNFUSED_TRITON_FLAT=value, TRITON_INTERPRET="1")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
        assert out.returncode == 0 and out.stdout.split()[-1:] == [want], out.stdout + out.stderr
