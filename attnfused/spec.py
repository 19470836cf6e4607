"""The gate family: the small, explicit set of variants one set of kernels serves.

The ecosystem's SE / ECA / CBAM modules (timm, torchvision, the papers' code) differ only in the
small math on pooled statistics, never in the full-size passes, so a variant is a pair of specs:

- :class:`ChannelSpec` — how ``ca[b, c]`` is made from ``avg_P x`` / ``max_P x``;
- :class:`SpatialSpec` — how ``sa[b, h, w]`` is made from ``max_C x1`` / ``mean_C x1``.

The fused op computes ``y = x * ca * sa`` (either stage may be absent) with the same passes and
traffic for every member of the family. Anything outside it stays eager (``attnfused.convert``
names it in its report).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ChannelSpec", "SpatialSpec", "CHANNEL_GATES", "ACTIVATIONS", "GATE_FNS", "POOLS", "MAPS"]

CHANNEL_GATES = ("fc", "linear", "conv")
ACTIVATIONS = ("relu", "silu")
GATE_FNS = ("sigmoid", "hard_sigmoid")
POOLS = ("avg", "max", "avgmax", "avgmax_mean")
CONV_PADDINGS = ("zeros", "circular")
MAPS = ("max_mean", "mean_max", "half_sum")


def _check(name: str, value: object, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


@dataclass(frozen=True)
class ChannelSpec:
    """Channel gate ``ca = gate_fn(sum over pooled stats s of G(s))``.

    - ``gate``: ``"fc"`` — ``W2 act(W1 s + b1) + b2`` (SE; biases optional);
      ``"linear"`` — ``W1 s + b1``, one layer (timm's EffectiveSE);
      ``"conv"`` — 1-D conv over channels, kernel ``[1, 1, k]``, no bias (ECA).
    - ``act``: hidden activation of ``"fc"``: ``"relu"`` or ``"silu"``.
    - ``gate_fn``: ``"sigmoid"`` or ``"hard_sigmoid"`` (``relu6(z + 3) / 6``).
    - ``pool``: ``"avg"``, ``"max"``, ``"avgmax"`` (``G(avg) + G(max)``, CBAM),
      ``"avgmax_mean"`` (``G(0.5 * (avg + max))``, timm's ``add_maxpool`` and LightCBAM).
    - ``conv_padding``: ``"zeros"`` (ECA) or ``"circular"`` (timm's CECA), for ``"conv"``.
    """

    gate: str = "fc"
    act: str = "relu"
    gate_fn: str = "sigmoid"
    pool: str = "avg"
    conv_padding: str = "zeros"

    def __post_init__(self) -> None:
        _check("gate", self.gate, CHANNEL_GATES)
        _check("act", self.act, ACTIVATIONS)
        _check("gate_fn", self.gate_fn, GATE_FNS)
        _check("pool", self.pool, POOLS)
        _check("conv_padding", self.conv_padding, CONV_PADDINGS)

    def encode(self) -> str:
        return ":".join((self.gate, self.act, self.gate_fn, self.pool, self.conv_padding))

    @classmethod
    def decode(cls, text: str) -> "ChannelSpec":
        return cls(*text.split(":"))


@dataclass(frozen=True)
class SpatialSpec:
    """Spatial gate ``sa = gate_fn(BN?(conv2d(maps) + bias?))``, ``k x k`` conv, same padding.

    - ``maps``: ``"max_mean"`` (source text, official CBAM: ``[max_C, mean_C]``), ``"mean_max"``
      (timm's CBAM), ``"half_sum"`` (one map ``0.5 * (mean_C + max_C)``, timm's LightCBAM).
    - ``gate_fn``: ``"sigmoid"`` or ``"hard_sigmoid"``.
    - ``norm``: a ``BatchNorm2d(1)`` after the conv (official CBAM, timm): folded into a scale and
      shift with running statistics in eval; batch statistics in training (the caller updates the
      running statistics from the batch moments the op returns).
    """

    maps: str = "max_mean"
    gate_fn: str = "sigmoid"
    norm: bool = False

    def __post_init__(self) -> None:
        _check("maps", self.maps, MAPS)
        _check("gate_fn", self.gate_fn, GATE_FNS)
        if not isinstance(self.norm, bool):
            raise ValueError(f"norm must be a bool, got {self.norm!r}")

    @property
    def n_maps(self) -> int:
        return 1 if self.maps == "half_sum" else 2

    def encode(self) -> str:
        return ":".join((self.maps, self.gate_fn, "bn" if self.norm else "nobn"))

    @classmethod
    def decode(cls, text: str) -> "SpatialSpec":
        maps, gate_fn, norm = text.split(":")
        return cls(maps, gate_fn, norm == "bn")
