"""gradcheck (fp64) and opcheck of the block op, for every stage combination."""

from __future__ import annotations

import pytest
import torch

import attnfused
from attnfused import functional as AF
from helpers import DEVICE


def _weights(kind: str, c: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return (torch.randn(shape, generator=g, dtype=torch.float64) * 2).to(DEVICE)

    if kind == "fc":
        return r(max(c // 2, 1), c), r(c, max(c // 2, 1))
    return r(1, 1, 3), None


def _spatial_weight(k: int) -> torch.Tensor:
    return torch.randn(1, 2, k, k, dtype=torch.float64, generator=torch.Generator().manual_seed(k)).to(DEVICE)


# name -> x -> (functional entry point, its arguments)
CASES = {
    "se_avg": lambda x: (AF.se, (x, *_weights("fc", x.shape[1]), "avg")),
    "se_max": lambda x: (AF.se, (x, *_weights("fc", x.shape[1]), "max")),
    "eca": lambda x: (AF.eca, (x, _weights("conv", x.shape[1])[0])),
    "ca_conv": lambda x: (AF.channel_attention, (x, _weights("conv", x.shape[1])[0], None, "conv")),
    "spatial": lambda x: (AF.spatial_attention, (x, _spatial_weight(3))),
    "cbam_fc": lambda x: (AF.cbam, (x, *_weights("fc", x.shape[1]), "fc", _spatial_weight(3))),
    "cbam_conv": lambda x: (AF.cbam, (x, _weights("conv", x.shape[1])[0], None, "conv", _spatial_weight(5))),
}


def _x(layout: str, shape=(2, 4, 3, 5)):
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    return x.to(memory_format=torch.channels_last) if layout == "channels_last" else x


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("case", list(CASES))
def test_gradcheck(case, layout):
    # fast_mode checks the full Jacobian against random projections (a few evaluations instead of
    # one per input element): the interpreter makes each evaluation cost milliseconds.
    fn, args = CASES[case](_x(layout))
    args = tuple(a.detach().requires_grad_(True) if isinstance(a, torch.Tensor) else a for a in args)
    with attnfused.use_backend("triton"):
        assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True)


@pytest.mark.parametrize("case", ["se_max", "cbam_fc"])
def test_gradcheck_full_jacobian(case):
    fn, args = CASES[case](_x("channels_last", shape=(2, 3, 2, 3)))
    args = tuple(a.detach().requires_grad_(True) if isinstance(a, torch.Tensor) else a for a in args)
    with attnfused.use_backend("triton"):
        assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-7, rtol=1e-5)


def _op_args(case: str, layout: str):
    """Arguments of torch.ops.attnfused.attention for ``case``."""
    x = _x(layout)
    c = x.shape[1]
    sw = _spatial_weight(3)
    w1, w2 = _weights("fc", c)
    wc, _ = _weights("conv", c)
    return {
        "se_avg": (x, w1, w2, "fc", "avg", None),
        "se_max": (x, w1, w2, "fc", "max", None),
        "eca": (x, wc, None, "conv", "avg", None),
        "ca_conv": (x, wc, None, "conv", "avgmax", None),
        "spatial": (x, None, None, "fc", "avg", sw),
        "cbam_fc": (x, w1, w2, "fc", "avgmax", sw),
        "cbam_conv": (x, wc, None, "conv", "avgmax", sw),
    }[case]


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("case", list(CASES))
def test_opcheck(case, layout):
    args = tuple(
        a.detach().requires_grad_(True) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
        for a in _op_args(case, layout)
    )
    with attnfused.use_backend("triton"):
        torch.library.opcheck(torch.ops.attnfused.attention.default, args)


@pytest.mark.parametrize("case", ["se_max", "cbam_fc", "spatial"])
def test_opcheck_backward_op(case):
    args = _op_args(case, "nchw")
    with attnfused.use_backend("triton"):
        y, *saved = torch.ops.attnfused.attention(*args)
    x, w1, w2, gate, pool, sw = args
    dy = torch.randn_like(y)
    with attnfused.use_backend("triton"):
        torch.library.opcheck(
            torch.ops.attnfused.attention_backward.default, (dy, x, w1, w2, gate, pool, sw, *saved)
        )
