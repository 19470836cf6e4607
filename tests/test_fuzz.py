"""Differential fuzz: each fused provider against the reference on random members of the gate
family (attnfused.spec), shapes, strides, dtypes and weight dtypes, forward and backward.

The fixed tests pick their cases by hand; this one draws them (fixed seeds, so a failure replays:
the message names the seed and case). It found the circular conv gate's missing check on kernels
wider than 2C + 1 (tests/test_api.py, test_bad_inputs).

The oracle: fp64 math on the same inputs (the reference in fp64, from the inputs and weights
rounded to their dtypes). A fused result passes when it is within ``tol * max(1, |truth|)`` of it
or no further from it than 3x the reference's own error in the same dtypes. The reference is not
the truth itself: with fp32 weights and fp64 x it runs the gates in fp32 where the fused op uses
fp64 (both documented), its hard sigmoid's backward scales by a float32 1/6, and near ties of a
max it may pick another element than fp64 math does. fp16/bf16 cases check the forward only: their
backward sends a max's gradient to the first of the elements tied after rounding x * ca to the
dtype, and the fused gate's last-bit differences from eager's decide which elements tie.
"""

from __future__ import annotations

import random
from typing import Optional

import pytest
import torch

import attnfused
from attnfused import functional as AF
from attnfused.spec import ChannelSpec, SpatialSpec
from helpers import DEVICE, dtypes_for

# Cases per provider (each seed runs half): interpreted Triton costs ~5x the others per case; on a
# GPU each new shape may compile Triton kernels (seconds each), and GPU time is scarce.
CASES = {"triton": 30, "cuda": 60} if DEVICE.type == "cuda" else {"triton": 60}
DEFAULT_CASES = 300
# Relative to max(1, |truth|); gradients of the spatial conv in front of a BatchNorm in training
# come out of a sum that cancels to (near) zero, so roundoff dominates them (eager's too).
TOL = {torch.float64: 1e-9, torch.float32: 2e-4, torch.float16: 2e-2, torch.bfloat16: 5e-2}
HARD_SIGMOID_F64_TOL = 3e-7  # aten's hardsigmoid_backward: a float32 1/6 (ops/_gates.py)
BN_TRAIN_GRAD_TOL = 1e-2


def _layout(t: torch.Tensor, rng: random.Random) -> tuple[torch.Tensor, str]:
    """``t``'s values in a random memory layout, and its name."""
    kind = rng.choice(["nchw", "channels_last", "channels_last", "permuted", "sliced", "batch_stride"])
    if kind == "nchw":
        return t.contiguous(), kind
    if kind == "channels_last":
        return t.contiguous(memory_format=torch.channels_last), kind
    if kind == "permuted":
        order = list(range(4))
        rng.shuffle(order)
        return t.permute(order).contiguous().permute([order.index(i) for i in range(4)]), kind
    # every other element of a buffer twice as long along one axis (the batch axis for batch_stride)
    d = 0 if kind == "batch_stride" else rng.randrange(1, 4)
    shape = list(t.shape)
    shape[d] *= 2
    big = torch.zeros(shape, dtype=t.dtype, device=t.device)
    if rng.random() < 0.5:
        big = big.contiguous(memory_format=torch.channels_last)
    index = [slice(None)] * 4
    index[d] = slice(0, None, 2)
    big[tuple(index)] = t
    return big[tuple(index)], kind


def _weights(rng: random.Random, c: int, cs: Optional[ChannelSpec], ss: Optional[SpatialSpec], n: int) -> dict:
    """fp64 weights (and the BatchNorm's flags) for :func:`AF.attention`; ``n`` = B * H * W."""
    g = torch.Generator().manual_seed(rng.randrange(2**31))

    def r(*shape, scale=1.0):
        return torch.randn(shape, generator=g, dtype=torch.float64) * scale

    kw: dict = {}
    if cs is not None and cs.gate == "fc":
        hidden = rng.choice([1, 2, 3, max(1, c // 4), c])
        kw.update(w1=r(hidden, c, scale=2 / c**0.5), w2=r(c, hidden, scale=2 / hidden**0.5))
        if rng.random() < 0.3:
            kw["b1"] = r(hidden)
        if rng.random() < 0.3:
            kw["b2"] = r(c)
    elif cs is not None and cs.gate == "linear":
        kw["w1"] = r(c, c, scale=2 / c**0.5)
        if rng.random() < 0.3:
            kw["b1"] = r(c)
    elif cs is not None:
        widest = 2 * c + 1 if cs.conv_padding == "circular" else 9
        kw["w1"] = r(1, 1, rng.choice([k for k in (1, 3, 5, 7, 9) if k <= widest]))
    if ss is not None:
        k = rng.choice([1, 3, 5, 7])
        kw["sw"] = r(1, ss.n_maps, k, k, scale=1 / k)
        if rng.random() < 0.4:
            kw["sb"] = r(1)
        if ss.norm:
            kw.update(bn_weight=r(1).abs() + 0.5, bn_bias=r(1))
            kw["bn_train"] = n > 1 and rng.random() < 0.6
            if not kw["bn_train"] or rng.random() < 0.5:
                kw.update(bn_mean=r(1, scale=0.1), bn_var=r(1).abs() + 0.5)
    return kw


def _case(rng: random.Random, dtypes: list[torch.dtype]) -> dict:
    b, c = rng.choice([1, 1, 2, 3, 5]), rng.choice([1, 2, 3, 4, 7, 8, 9, 16, 17, 31, 33, 64, 65, 130])
    h, w = rng.choice([1, 1, 2, 3, 5, 7, 8, 9, 14, 17]), rng.choice([1, 2, 3, 5, 7, 8, 9, 13, 16])
    cs = ss = None
    if rng.random() < 0.85:
        cs = ChannelSpec(
            gate=rng.choice(["fc", "fc", "conv", "linear"]), act=rng.choice(["relu", "silu"]),
            gate_fn=rng.choice(["sigmoid", "hard_sigmoid"]), pool=rng.choice(["avg", "max", "avgmax", "avgmax_mean"]),
            conv_padding=rng.choice(["zeros", "circular"]),
        )
    if cs is None or rng.random() < 0.5:
        ss = SpatialSpec(maps=rng.choice(["max_mean", "mean_max", "half_sum"]),
                         gate_fn=rng.choice(["sigmoid", "hard_sigmoid"]), norm=rng.random() < 0.3)
    x = torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(rng.randrange(2**31)), dtype=torch.float64)
    if rng.random() < 0.1:
        x = x.round()  # ties for the maxima
    dtype = rng.choice(dtypes)
    return dict(
        x=x, channel=cs, spatial=ss, kw=_weights(rng, c, cs, ss, b * h * w), dtype=dtype,
        wdtype=dtype if rng.random() < 0.8 else torch.float32, layout_seed=rng.randrange(2**31),
        grad=dtype in (torch.float32, torch.float64) and rng.random() < 0.7,
    )


def _run(case: dict, backend: str, dtype: torch.dtype, wdtype: torch.dtype) -> dict[str, torch.Tensor]:
    """y, the running statistics and with ``grad`` every gradient, as fp64 tensors."""
    rng = random.Random(case["layout_seed"])
    x, kind = _layout(case["x"].to(DEVICE, dtype), rng)
    x.requires_grad_(case["grad"])
    kw = {}
    for name, v in case["kw"].items():
        if isinstance(v, torch.Tensor):
            v = v.to(DEVICE, wdtype)
            if v.dim() >= 2 and rng.random() < 0.3:  # the same values with transposed strides
                v = v.transpose(-1, -2).contiguous().transpose(-1, -2)
            v.requires_grad_(case["grad"] and name not in ("bn_mean", "bn_var"))
        kw[name] = v
    with attnfused.use_backend(backend):
        y = AF.attention(x, case["channel"], spatial=case["spatial"], **kw)
    out = {"y": y}
    dense = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}.get(kind)
    if dense is not None and not y.is_contiguous(memory_format=dense):
        raise AssertionError(f"{backend}: y of an x in {kind} has strides {y.stride()}")
    if "bn_mean" in kw and kw.get("bn_train"):
        out.update(bn_mean=kw["bn_mean"], bn_var=kw["bn_var"])
    if case["grad"]:
        dy, _ = _layout(torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
                        .to(DEVICE, dtype), rng)
        leaves = {"x": x, **{k: v for k, v in kw.items() if isinstance(v, torch.Tensor) and v.requires_grad}}
        with attnfused.use_backend(backend):
            grads = torch.autograd.grad(y, list(leaves.values()), dy)
        out.update({"d" + k: g for k, g in zip(leaves, grads)})
    return {k: v.detach().double() for k, v in out.items()}


def _problems(case: dict, got: dict, ref: dict, truth: dict) -> list[str]:
    dtype = case["dtype"] if TOL[case["dtype"]] > TOL[case["wdtype"]] else case["wdtype"]
    hard = "hard_sigmoid" in f"{case['channel']}{case['spatial']}"
    bn_train = case["spatial"] is not None and case["spatial"].norm and case["kw"].get("bn_train")
    problems = []
    for key, want in truth.items():
        tol = TOL[dtype]
        if hard and dtype == torch.float64:
            tol = HARD_SIGMOID_F64_TOL
        if bn_train and key in ("dsw", "dsb") and dtype != torch.float64:
            tol = BN_TRAIN_GRAD_TOL
        if got[key].shape != want.shape:
            problems.append(f"{key}: shape {tuple(got[key].shape)}, expected {tuple(want.shape)}")
            continue
        if not torch.equal(got[key].isnan(), want.isnan()):
            problems.append(f"{key}: NaNs where the truth has none or the other way round")
            continue
        err = (got[key] - want).abs().nan_to_num(0)
        ref_err = (ref[key] - want).abs().nan_to_num(0)
        limit = max(tol * max(1.0, want.abs().nan_to_num(0).max().item()), 3 * ref_err.max().item())
        if err.max().item() > limit:
            problems.append(f"{key}: off by {err.max().item():.3g} (limit {limit:.3g}, reference off by "
                            f"{ref_err.max().item():.3g})")
    return problems


def _describe(case: dict) -> str:
    kw = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else v for k, v in case["kw"].items()}
    return (f"x {tuple(case['x'].shape)} {case['dtype']} (weights {case['wdtype']}), {case['channel']}, "
            f"{case['spatial']}, grad={case['grad']}, {kw}")


@pytest.mark.parametrize("seed", [0, 1])
def test_random_members_match_fp64_math(seed, provider):
    rng = random.Random(f"{provider}-{seed}")
    failures = []
    for i in range(CASES.get(provider, DEFAULT_CASES) // 2):
        case = _case(rng, dtypes_for(provider))
        got = _run(case, provider, case["dtype"], case["wdtype"])
        ref = _run(case, "reference", case["dtype"], case["wdtype"])
        exact = dict(case, x=case["x"].to(case["dtype"]).double(),
                     kw={k: v.to(case["wdtype"]).double() if isinstance(v, torch.Tensor) else v
                         for k, v in case["kw"].items()})
        truth = _run(exact, "reference", torch.float64, torch.float64)
        problems = _problems(case, got, ref, truth)
        if problems:
            failures.append(f"case {i} of seed {seed}: {_describe(case)}: {'; '.join(problems)}")
    assert not failures, "\n".join(failures)
