"""Swap the attention modules of an existing model for fused ones, weights kept.

:func:`convert` walks a model's children and replaces, in place, every attention module it knows
by a :class:`attnfused.modules.FusedAttention` that *adopts* the original's parameters, buffers
and sub-modules (same objects, same names): ``state_dict`` keys do not change, so checkpoints load
into the converted model and back with ``strict=True``, optimizers keep working on the same
parameter objects, and ``train()`` / ``eval()`` still reach BatchNorm children. It returns a
:class:`ConvertReport` naming every module it replaced and every known module it left alone, with
the reason. Converting twice replaces nothing the second time.

Known modules (each has one recogniser below that checks every attribute its ``forward`` uses;
an instance outside the gate family of :mod:`attnfused.spec` is left alone and reported):

- timm ``layers.squeeze_excite.SEModule`` (attn ``"se"``; SE-ResNet, RegNetY, ...): ``fc`` gate,
  pool ``avg`` (``avgmax_mean`` with ``add_maxpool``), activation and gate from the module;
- timm ``EffectiveSEModule`` (``"ese"``): ``linear`` gate (one 1x1 conv C->C with bias);
- timm ``models._efficientnet_blocks.SqueezeExcite`` (EfficientNet, MobileNetV3, ...): ``fc``;
- timm ``models.senet.SEModule`` (legacy SENets): ``fc``, ReLU, sigmoid;
- timm ``EcaModule`` (``"eca"``) and ``CecaModule`` (``"ceca"``): ``conv`` gate, zero / circular
  padding;
- timm ``CbamModule`` (``"cbam"``): channel ``avgmax`` + spatial maps ``mean_max`` with BatchNorm;
- timm ``LightCbamModule`` (``"lcbam"``): channel ``avgmax_mean`` + spatial ``half_sum`` with
  BatchNorm (both gates sigmoid whatever ``gate_layer`` says: timm's forward ignores it there);
- timm ``ChannelAttn``, ``LightChannelAttn``, ``SpatialAttn``, ``LightSpatialAttn`` on their own
  (also when their CBAM parent is outside the family);
- torchvision ``ops.misc.SqueezeExcitation`` (EfficientNet, MobileNetV3, RegNet): ``fc`` with
  biases, activation from ``activation``, gate from ``scale_activation``;
- the official CBAM code (Jongchan Park's ``attention-module``), opt-in and by structure: see
  :func:`convert_official_cbam`.

attnfused's own modules (``SEBlock``, ``ECABlock``, ``CBAMBlock``, ``ChannelAttentionFC``,
``ChannelAttentionConv``, ``SpatialAttention``, ``FusedAttention``) are fused already: they are
reported as "already attnfused" and not descended into.

Things the family cannot express stay eager, e.g.: timm ``SEModule`` with a ``norm_layer`` (a
BatchNorm between ``fc1`` and the activation), an activation other than ReLU/SiLU, a gate other
than sigmoid/hard-sigmoid, ``EcaModule(use_mlp=True)`` (timm's ``ecam``), ``CecaModule`` with an
``act_layer`` (its conv then has a bias, which the ``conv`` gate has not), ``SqueezeExciteCl``
(takes ``[B, H, W, C]`` tensors), a spatial ``SyncBatchNorm`` (the fused BatchNorm uses the local
batch only), a module with forward/backward hooks on it or on a child (the fused op would not call
them), parametrized weights, or a subclass that overrides a method.

Only the *children* of ``model`` are replaced (a module cannot replace itself in its parent's
place): ``convert(m)`` where ``m`` itself is a known attention module raises ``ValueError``; use
:func:`convert_module`, which returns the fused equivalent. Modules shared by several parents are
replaced once and the same fused module is put at every place.
"""

from __future__ import annotations

import operator
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ._backend import backend_names
from .spec import ChannelSpec, SpatialSpec

__all__ = ["ConvertReport", "convert", "convert_module", "convert_official_cbam", "recognize"]


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


@dataclass
class ConvertReport:
    """What :func:`convert` did.

    - ``replaced``: ``(qualified name, original class name, spec description)`` per fused module;
    - ``skipped``: ``(qualified name, class name, reason)`` per known attention module left alone
      (out of the gate family, already attnfused, ...). Modules attnfused does not know at all
      (convolutions, BatchNorms, unknown attention designs) are not listed.

    ``len(report)`` and ``bool(report)`` count the replaced modules.
    """

    replaced: List[Tuple[str, str, str]] = field(default_factory=list)
    skipped: List[Tuple[str, str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.replaced)

    def __bool__(self) -> bool:
        return bool(self.replaced)

    def counts(self) -> Counter:
        """Replaced modules per original class name."""
        return Counter(cls for _, cls, _ in self.replaced)

    def skipped_counts(self) -> Counter:
        """Skipped modules per reason."""
        return Counter(reason for _, _, reason in self.skipped)

    def __str__(self) -> str:
        lines = [f"attnfused.convert: replaced {len(self.replaced)} module(s), left {len(self.skipped)} alone"]
        if self.replaced:
            lines.append("replaced:")
            w = max(len(n or "<root>") for n, _, _ in self.replaced)
            for name, cls, desc in self.replaced:
                lines.append(f"  {name or '<root>':<{w}}  {cls}: {desc}")
        if self.skipped:
            lines.append("left alone:")
            w = max(len(n or "<root>") for n, _, _ in self.skipped)
            for name, cls, reason in self.skipped:
                lines.append(f"  {name or '<root>':<{w}}  {cls}: {reason}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# What a recogniser returns
# --------------------------------------------------------------------------------------------


@dataclass
class Match:
    """A module inside the family: its specs and where its weights live (dotted paths)."""

    channel: Optional[ChannelSpec] = None
    channel_params: Dict[str, str] = field(default_factory=dict)
    spatial: Optional[SpatialSpec] = None
    spatial_params: Dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        parts = []
        if self.channel is not None:
            c = self.channel
            text = f"channel {c.gate} gate"
            if c.gate == "fc":
                text += f", act={c.act}"
            text += f", {c.gate_fn}, pool={c.pool}"
            if c.gate == "conv":
                text += f", padding={c.conv_padding}"
            biases = [r for r in ("b1", "b2") if r in self.channel_params]
            if biases:
                text += f", bias={'+'.join(biases)}"
            parts.append(text)
        if self.spatial is not None:
            s = self.spatial
            text = f"spatial maps={s.maps}, {s.gate_fn}"
            if "bias" in self.spatial_params:
                text += ", conv bias"
            if s.norm:
                text += ", BatchNorm"
            parts.append(text)
        return "; ".join(parts)


Outcome = Union[Match, str]  # a Match, or the reason the instance is outside the family


def _prefixed(params: Dict[str, str], prefix: str) -> Dict[str, str]:
    return {role: prefix + path for role, path in params.items()}


# --------------------------------------------------------------------------------------------
# Attribute checks shared by the recognisers (each returns None when fine, else a reason)
# --------------------------------------------------------------------------------------------


def _qual(obj) -> str:
    t = obj if isinstance(obj, type) else type(obj)
    return f"{t.__module__}.{t.__qualname__}"


def _timm_attr(module: str, name: str):
    mod = sys.modules.get(module)
    return getattr(mod, name, None) if mod is not None else None


_ACT = "timm.layers.activations"
_ACT_ME = "timm.layers.activations_me"


def _with_timm(base: tuple, *timm_names: tuple[str, str]) -> tuple:
    """``base`` plus those of the timm attributes ``(module, name)`` that are loaded."""
    return base + tuple(a for a in (_timm_attr(m, n) for m, n in timm_names) if a is not None)


def _act_name(act) -> Optional[str]:
    """``"relu"`` / ``"silu"`` for the hidden activations the family has, else None."""
    relu_types = (nn.ReLU,)
    silu_types = _with_timm((nn.SiLU,), (_ACT, "Swish"), (_ACT_ME, "SwishMe"))
    if isinstance(act, nn.Module):
        if type(act) in relu_types:
            return "relu"
        if type(act) in silu_types:
            return "silu"
        return None
    relu_fns = {F.relu, torch.relu}
    silu_fns = set(_with_timm((F.silu,), (_ACT, "swish"), (_ACT_ME, "swish_me")))
    try:
        if act in relu_fns:
            return "relu"
        if act in silu_fns:
            return "silu"
    except TypeError:  # unhashable
        pass
    return None


def _gate_name(gate) -> Optional[str]:
    """``"sigmoid"`` / ``"hard_sigmoid"`` for the gate functions the family has, else None.

    ``hard_sigmoid`` is ``relu6(z + 3) / 6``: torch's ``Hardsigmoid`` and timm's ``HardSigmoid``,
    ``HardSigmoidMe`` all compute it.
    """
    sig_types = _with_timm((nn.Sigmoid,), (_ACT, "Sigmoid"))
    hsig_types = _with_timm((nn.Hardsigmoid,), (_ACT, "HardSigmoid"), (_ACT_ME, "HardSigmoidMe"))
    if isinstance(gate, nn.Module):
        if type(gate) in sig_types:
            return "sigmoid"
        if type(gate) in hsig_types:
            return "hard_sigmoid"
        return None
    sig_fns = set(_with_timm((torch.sigmoid, F.sigmoid, torch.Tensor.sigmoid), (_ACT, "sigmoid")))
    hsig_fns = set(_with_timm((F.hardsigmoid,), (_ACT, "hard_sigmoid"), (_ACT_ME, "hard_sigmoid_me")))
    try:
        if gate in sig_fns:
            return "sigmoid"
        if gate in hsig_fns:
            return "hard_sigmoid"
    except TypeError:
        pass
    return None


def _describe_callable(obj) -> str:
    if obj is None:
        return "None"
    if isinstance(obj, nn.Module):
        return type(obj).__name__
    return getattr(obj, "__qualname__", None) or repr(obj)


def _act(module: nn.Module, attr: str) -> Union[Tuple[str], str]:
    """(act name,) or a reason."""
    a = getattr(module, attr, None)
    name = _act_name(a)
    if name is None:
        return f"activation {attr}={_describe_callable(a)} is not ReLU or SiLU"
    return (name,)


def _gate(module: nn.Module, attr: str) -> Union[Tuple[str], str]:
    g = getattr(module, attr, None)
    name = _gate_name(g)
    if name is None:
        return f"gate {attr}={_describe_callable(g)} is not sigmoid or hard-sigmoid"
    return (name,)


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _conv1x1(module: nn.Module, attr: str, cin: Optional[int], cout: Optional[int]) -> Optional[str]:
    """A plain 1x1 ``nn.Conv2d`` acting as a Linear layer on ``[B, C, 1, 1]``."""
    c = getattr(module, attr, None)
    if type(c) is not nn.Conv2d:
        return f"{attr} is {_describe_callable(c)}, not a plain nn.Conv2d"
    if (
        _pair(c.kernel_size) != (1, 1) or _pair(c.stride) != (1, 1) or _pair(c.dilation) != (1, 1)
        or c.groups != 1 or c.padding not in ((0, 0), "valid", "same")
    ):
        return (f"{attr} is not a plain 1x1 conv (kernel {c.kernel_size}, stride {c.stride}, "
                f"padding {c.padding}, dilation {c.dilation}, groups {c.groups})")
    if cin is not None and c.in_channels != cin:
        return f"{attr} has {c.in_channels} input channels, expected {cin}"
    if cout is not None and c.out_channels != cout:
        return f"{attr} has {c.out_channels} output channels, expected {cout}"
    return None


def _linear(module: nn.Module, attr: str, cin: Optional[int], cout: Optional[int]) -> Optional[str]:
    lin = module._modules.get(attr) if attr.isdigit() else getattr(module, attr, None)
    if type(lin) is not nn.Linear:
        return f"{attr} is {_describe_callable(lin)}, not an nn.Linear"
    if cin is not None and lin.in_features != cin:
        return f"{attr} has {lin.in_features} input features, expected {cin}"
    if cout is not None and lin.out_features != cout:
        return f"{attr} has {lin.out_features} output features, expected {cout}"
    return None


def _fc_params(prefix1: str, layer1: nn.Module, prefix2: str, layer2: nn.Module) -> Dict[str, str]:
    params = {"w1": f"{prefix1}.weight", "w2": f"{prefix2}.weight"}
    if layer1.bias is not None:
        params["b1"] = f"{prefix1}.bias"
    if layer2.bias is not None:
        params["b2"] = f"{prefix2}.bias"
    return params


def _fc_gate(module: nn.Module, fc1: str, act: str, fc2: str, gate: Optional[str], pool: str,
             gate_fn: Optional[str] = None) -> Outcome:
    """An SE-style ``gate(fc2(act(fc1(pool x))))`` made of 1x1 convs."""
    c1 = getattr(module, fc1, None)
    reason = _conv1x1(module, fc1, None, None)
    if reason:
        return reason
    reason = _conv1x1(module, fc2, c1.out_channels, c1.in_channels)
    if reason:
        return reason
    a = _act(module, act)
    if isinstance(a, str):
        return a
    if gate_fn is None:
        g = _gate(module, gate)
        if isinstance(g, str):
            return g
        gate_fn = g[0]
    return Match(
        ChannelSpec(gate="fc", act=a[0], gate_fn=gate_fn, pool=pool),
        _fc_params(fc1, c1, fc2, getattr(module, fc2)),
    )


def _eca_conv(conv, padding: int) -> Optional[str]:
    """``nn.Conv1d(1, 1, k)``, no bias, odd k, stride/dilation 1, the given zero padding."""
    if type(conv) is not nn.Conv1d:
        return f"conv is {_describe_callable(conv)}, not a plain nn.Conv1d"
    k = conv.kernel_size[0]
    if conv.in_channels != 1 or conv.out_channels != 1 or conv.groups != 1:
        return f"conv is {conv.in_channels}->{conv.out_channels} channels (groups {conv.groups}), not 1->1"
    if k % 2 == 0:
        return f"conv kernel size {k} is even"
    if conv.stride != (1,) or conv.dilation != (1,):
        return f"conv has stride {conv.stride} / dilation {conv.dilation}"
    if conv.padding_mode != "zeros" or tuple(conv.padding) != (padding,):
        return f"conv padding {conv.padding} ({conv.padding_mode}) is not {padding} zeros"
    if conv.bias is not None:
        return "conv has a bias (the family's 'conv' gate has none)"
    return None


def _spatial_conv(conv, n_maps: int) -> Optional[str]:
    """``nn.Conv2d(n_maps, 1, k)``, square odd k, 'same' zero padding, stride/dilation 1."""
    if type(conv) is not nn.Conv2d:
        return f"spatial conv is {_describe_callable(conv)}, not a plain nn.Conv2d"
    if conv.in_channels != n_maps or conv.out_channels != 1 or conv.groups != 1:
        return f"spatial conv is {conv.in_channels}->{conv.out_channels} channels, expected {n_maps}->1"
    kh, kw = _pair(conv.kernel_size)
    if kh != kw or kh % 2 == 0:
        return f"spatial conv kernel {conv.kernel_size} is not square and odd"
    if _pair(conv.stride) != (1, 1) or _pair(conv.dilation) != (1, 1):
        return f"spatial conv has stride {conv.stride} / dilation {conv.dilation}"
    p = (kh - 1) // 2
    if conv.padding_mode != "zeros" or conv.padding not in ((p, p), "same"):
        return f"spatial conv padding {conv.padding} ({conv.padding_mode}) is not 'same' zero padding"
    return None


def _bn1(bn) -> Optional[str]:
    """A BatchNorm2d(1) after the spatial conv: torch's, or timm's BatchNormAct2d without act/drop."""
    bn_act = _timm_attr("timm.layers.norm_act", "BatchNormAct2d")
    if type(bn) is nn.BatchNorm2d:
        pass
    elif bn_act is not None and type(bn) is bn_act:
        for attr in ("act", "drop"):
            sub = getattr(bn, attr, None)
            if sub is not None and type(sub) is not nn.Identity:
                return f"the spatial BatchNormAct2d has {attr}={type(sub).__name__}"
    else:
        return f"the spatial norm is {_describe_callable(bn)}, not a BatchNorm2d"
    if bn.num_features != 1:
        return f"the spatial BatchNorm has {bn.num_features} features, expected 1"
    return None


def _timm_conv_norm(module: nn.Module, attr: str, n_maps: int) -> Union[Tuple[bool, Dict[str, str]], str]:
    """timm's ``ConvNormAct(n_maps, 1, k, apply_act=False)``: (has BatchNorm, spatial_params)."""
    cna = getattr(module, attr, None)
    cna_type = _timm_attr("timm.layers.conv_bn_act", "ConvNormAct")
    if cna_type is None or type(cna) is not cna_type:
        return f"{attr} is {_describe_callable(cna)}, not timm's ConvNormAct"
    reason = _spatial_conv(cna.conv, n_maps)
    if reason:
        return reason
    aa = getattr(cna, "aa", None)
    if aa is not None and type(aa) is not nn.Identity:
        return f"{attr} has an anti-aliasing layer {type(aa).__name__}"
    params = {"weight": f"{attr}.conv.weight"}
    if cna.conv.bias is not None:
        params["bias"] = f"{attr}.conv.bias"
    bn = cna.bn
    if type(bn) is nn.Sequential and len(bn) == 0:  # apply_norm=False
        return False, params
    reason = _bn1(bn)
    if reason:
        return reason
    params["bn"] = f"{attr}.bn"
    return True, params


# --------------------------------------------------------------------------------------------
# Recognisers: one per known class
# --------------------------------------------------------------------------------------------


def _timm_se_module(m: nn.Module) -> Outcome:
    """timm ``layers.squeeze_excite.SEModule``: mean (+ amax if add_maxpool) -> fc1 -> bn -> act
    -> fc2 -> gate."""
    if type(m.bn) is not nn.Identity:
        return (f"norm_layer {type(m.bn).__name__} between fc1 and the activation is outside the "
                "gate family")
    pool = "avgmax_mean" if m.add_maxpool else "avg"
    return _fc_gate(m, "fc1", "act", "fc2", "gate", pool)


def _timm_effective_se(m: nn.Module) -> Outcome:
    """timm ``EffectiveSEModule``: mean (+ amax) -> one 1x1 conv C->C (bias) -> gate."""
    reason = _conv1x1(m, "fc", None, None)
    if reason:
        return reason
    if m.fc.in_channels != m.fc.out_channels:
        return f"fc is {m.fc.in_channels}->{m.fc.out_channels}, not C->C"
    g = _gate(m, "gate")
    if isinstance(g, str):
        return g
    params = {"w1": "fc.weight"}
    if m.fc.bias is not None:
        params["b1"] = "fc.bias"
    pool = "avgmax_mean" if m.add_maxpool else "avg"
    return Match(ChannelSpec(gate="linear", gate_fn=g[0], pool=pool), params)


def _timm_se_cl(m: nn.Module) -> Outcome:
    return "channels-last-tensor variant (input [B, H, W, C]); the fused op takes [B, C, H, W]"


def _timm_efficientnet_se(m: nn.Module) -> Outcome:
    """timm ``models._efficientnet_blocks.SqueezeExcite``: mean -> conv_reduce -> act1 ->
    conv_expand -> gate."""
    return _fc_gate(m, "conv_reduce", "act1", "conv_expand", "gate", "avg")


def _timm_senet_se(m: nn.Module) -> Outcome:
    """timm ``models.senet.SEModule`` (legacy SENets): mean -> fc1 -> relu -> fc2 -> sigmoid."""
    return _fc_gate(m, "fc1", "relu", "fc2", "sigmoid", "avg")


def _timm_eca(m: nn.Module) -> Outcome:
    """timm ``EcaModule``: mean -> Conv1d over channels (zero padding) -> gate."""
    if getattr(m, "conv2", None) is not None:
        return "use_mlp=True ('ecam'): a two-layer conv MLP over channels is outside the gate family"
    conv = m.conv
    if type(conv) is not nn.Conv1d:
        return f"conv is {_describe_callable(conv)}, not a plain nn.Conv1d"
    reason = _eca_conv(conv, (conv.kernel_size[0] - 1) // 2)
    if reason:
        return reason
    g = _gate(m, "gate")
    if isinstance(g, str):
        return g
    return Match(ChannelSpec(gate="conv", gate_fn=g[0], pool="avg", conv_padding="zeros"), {"w1": "conv.weight"})


def _timm_ceca(m: nn.Module) -> Outcome:
    """timm ``CecaModule``: mean -> circular pad ``m.padding`` -> Conv1d (no padding) -> gate."""
    conv = m.conv
    if type(conv) is not nn.Conv1d:
        return f"conv is {_describe_callable(conv)}, not a plain nn.Conv1d"
    if conv.bias is not None:
        return ("conv has a bias (CecaModule built with act_layer, which timm's forward then "
                "ignores); the family's 'conv' gate has none")
    reason = _eca_conv(conv, 0)
    if reason:
        return reason
    k = conv.kernel_size[0]
    if getattr(m, "padding", None) != (k - 1) // 2:
        return f"circular padding {getattr(m, 'padding', None)} is not (k - 1) // 2 = {(k - 1) // 2}"
    g = _gate(m, "gate")
    if isinstance(g, str):
        return g
    return Match(ChannelSpec(gate="conv", gate_fn=g[0], pool="avg", conv_padding="circular"), {"w1": "conv.weight"})


def _timm_channel_attn(m: nn.Module) -> Outcome:
    """timm ``cbam.ChannelAttn``: ``gate(fc2(act(fc1(mean))) + fc2(act(fc1(amax))))``."""
    return _fc_gate(m, "fc1", "act", "fc2", "gate", "avgmax")


def _timm_light_channel_attn(m: nn.Module) -> Outcome:
    """timm ``cbam.LightChannelAttn``: ``sigmoid(fc2(act(fc1(0.5 mean + 0.5 amax))))``.

    Its forward calls ``F.sigmoid`` and never uses ``self.gate``, so the gate is sigmoid whatever
    ``gate_layer`` was given.
    """
    return _fc_gate(m, "fc1", "act", "fc2", None, "avgmax_mean", gate_fn="sigmoid")


def _timm_spatial(m: nn.Module, maps: str, n_maps: int) -> Outcome:
    out = _timm_conv_norm(m, "conv", n_maps)
    if isinstance(out, str):
        return out
    norm, params = out
    g = _gate(m, "gate")
    if isinstance(g, str):
        return g
    return Match(spatial=SpatialSpec(maps=maps, gate_fn=g[0], norm=norm), spatial_params=params)


def _timm_spatial_attn(m: nn.Module) -> Outcome:
    """timm ``cbam.SpatialAttn``: ``gate(ConvNormAct(cat[mean_C, amax_C]))``."""
    return _timm_spatial(m, "mean_max", 2)


def _timm_light_spatial_attn(m: nn.Module) -> Outcome:
    """timm ``cbam.LightSpatialAttn``: ``gate(ConvNormAct(0.5 mean_C + 0.5 amax_C))``."""
    return _timm_spatial(m, "half_sum", 1)


def _combine(m: nn.Module, channel_cls, channel_rec, spatial_cls, spatial_rec) -> Outcome:
    """A CBAM made of ``m.channel`` then ``m.spatial``, each of its exact timm class."""
    for attr, cls in (("channel", channel_cls), ("spatial", spatial_cls)):
        sub = getattr(m, attr, None)
        if cls is None or type(sub) is not cls:
            return f"{attr} is {_describe_callable(sub)}, not timm's {getattr(cls, '__name__', '?')}"
    if set(m._modules) != {"channel", "spatial"}:
        return f"unexpected children {sorted(set(m._modules) - {'channel', 'spatial'})}"
    ch = channel_rec(m.channel)
    if isinstance(ch, str):
        return f"channel: {ch}"
    sp = spatial_rec(m.spatial)
    if isinstance(sp, str):
        return f"spatial: {sp}"
    return Match(ch.channel, _prefixed(ch.channel_params, "channel."),
                 sp.spatial, _prefixed(sp.spatial_params, "spatial."))


def _timm_cbam(m: nn.Module) -> Outcome:
    """timm ``CbamModule``: ``ChannelAttn`` then ``SpatialAttn``."""
    return _combine(
        m, _timm_attr("timm.layers.cbam", "ChannelAttn"), _timm_channel_attn,
        _timm_attr("timm.layers.cbam", "SpatialAttn"), _timm_spatial_attn,
    )


def _timm_light_cbam(m: nn.Module) -> Outcome:
    """timm ``LightCbamModule``: ``LightChannelAttn`` then ``LightSpatialAttn``."""
    return _combine(
        m, _timm_attr("timm.layers.cbam", "LightChannelAttn"), _timm_light_channel_attn,
        _timm_attr("timm.layers.cbam", "LightSpatialAttn"), _timm_light_spatial_attn,
    )


def _tv_squeeze_excitation(m: nn.Module) -> Outcome:
    """torchvision ``ops.misc.SqueezeExcitation``: ``scale_activation(fc2(activation(fc1(avgpool x))))
    * x``."""
    pool = m.avgpool
    if type(pool) is not nn.AdaptiveAvgPool2d or _pair(pool.output_size) != (1, 1):
        return f"avgpool is {pool!r}, not AdaptiveAvgPool2d(1)"
    return _fc_gate(m, "fc1", "activation", "fc2", "scale_activation", "avg")


# --- official CBAM (Jongchan Park's attention-module), recognised by structure ----------------


def _official_channel_gate(m: nn.Module) -> Outcome:
    """``ChannelGate``: ``mlp = Sequential(Flatten, Linear(C, Cr), ReLU, Linear(Cr, C))`` applied to
    each pool in ``pool_types`` (summed), then sigmoid."""
    mlp = getattr(m, "mlp", None)
    if type(mlp) is not nn.Sequential or len(mlp) != 4:
        return "ChannelGate.mlp is not Sequential(Flatten, Linear, ReLU, Linear)"
    flat = mlp[0]
    if not ((type(flat) is nn.Flatten and flat.start_dim == 1 and flat.end_dim == -1)
            or (type(flat).__name__ == "Flatten" and not list(flat.parameters()) and not list(flat.children()))):
        return f"ChannelGate.mlp[0] is {type(flat).__name__}, not Flatten"
    l1, l2 = mlp[1], mlp[3]
    reason = _linear(mlp, "1", getattr(m, "gate_channels", None), None) or _linear(
        mlp, "3", getattr(l1, "out_features", None), getattr(l1, "in_features", None))
    if reason:
        return f"ChannelGate.mlp: {reason}"
    if type(mlp[2]) is not nn.ReLU:
        return f"ChannelGate.mlp[2] is {type(mlp[2]).__name__}, not ReLU"
    pools = sorted(getattr(m, "pool_types", None) or [])
    by_pools = {("avg",): "avg", ("max",): "max", ("avg", "max"): "avgmax"}
    if tuple(pools) not in by_pools:
        return f"pool_types {getattr(m, 'pool_types', None)!r} (only 'avg', 'max' or both, once each)"
    return Match(ChannelSpec(gate="fc", act="relu", gate_fn="sigmoid", pool=by_pools[tuple(pools)]),
                 _fc_params("mlp.1", l1, "mlp.3", l2))


def _official_spatial_gate(m: nn.Module) -> Outcome:
    """``SpatialGate``: ``compress = ChannelPool`` (``cat[max_C, mean_C]``), ``spatial = BasicConv``
    (``conv`` 2->1, ``bn`` BatchNorm2d(1) or None, ``relu`` None), then sigmoid."""
    comp = getattr(m, "compress", None)
    if type(comp).__name__ != "ChannelPool" or list(comp.parameters()):
        return f"SpatialGate.compress is {_describe_callable(comp)}, not ChannelPool"
    bc = getattr(m, "spatial", None)
    if type(bc).__name__ != "BasicConv":
        return f"SpatialGate.spatial is {_describe_callable(bc)}, not BasicConv"
    if getattr(bc, "relu", None) is not None:
        return "BasicConv has relu=True (a ReLU after the spatial conv is outside the gate family)"
    reason = _spatial_conv(getattr(bc, "conv", None), 2)
    if reason:
        return reason
    params = {"weight": "spatial.conv.weight"}
    if bc.conv.bias is not None:
        params["bias"] = "spatial.conv.bias"
    norm = getattr(bc, "bn", None) is not None
    if norm:
        reason = _bn1(bc.bn)
        if reason:
            return reason
        params["bn"] = "spatial.bn"
    return Match(spatial=SpatialSpec(maps="max_mean", gate_fn="sigmoid", norm=norm), spatial_params=params)


def _official_cbam(m: nn.Module) -> Outcome:
    """``CBAM``: ``ChannelGate`` then (unless ``no_spatial``) ``SpatialGate``."""
    if type(getattr(m, "ChannelGate", None)).__name__ != "ChannelGate":
        return "no ChannelGate child"
    ch = _official_channel_gate(m.ChannelGate)
    if isinstance(ch, str):
        return f"ChannelGate: {ch}"
    out = Match(ch.channel, _prefixed(ch.channel_params, "ChannelGate."))
    if not getattr(m, "no_spatial", False):
        if type(getattr(m, "SpatialGate", None)).__name__ != "SpatialGate":
            return "no SpatialGate child"
        sp = _official_spatial_gate(m.SpatialGate)
        if isinstance(sp, str):
            return f"SpatialGate: {sp}"
        out.spatial, out.spatial_params = sp.spatial, _prefixed(sp.spatial_params, "SpatialGate.")
    return out


_OFFICIAL_BY_NAME: Dict[str, Callable[[nn.Module], Outcome]] = {
    "CBAM": _official_cbam,
    "ChannelGate": _official_channel_gate,
    "SpatialGate": _official_spatial_gate,
}


# --------------------------------------------------------------------------------------------
# Registry (classes looked up in sys.modules: a model holding a timm module has imported timm)
# --------------------------------------------------------------------------------------------

_RECOGNIZERS: Tuple[Tuple[str, str, Callable[[nn.Module], Outcome]], ...] = (
    ("timm.layers.squeeze_excite", "SEModule", _timm_se_module),
    ("timm.layers.squeeze_excite", "EffectiveSEModule", _timm_effective_se),
    ("timm.layers.squeeze_excite", "SqueezeExciteCl", _timm_se_cl),
    ("timm.models._efficientnet_blocks", "SqueezeExcite", _timm_efficientnet_se),
    ("timm.models.senet", "SEModule", _timm_senet_se),
    ("timm.layers.eca", "EcaModule", _timm_eca),
    ("timm.layers.eca", "CecaModule", _timm_ceca),
    ("timm.layers.cbam", "CbamModule", _timm_cbam),
    ("timm.layers.cbam", "LightCbamModule", _timm_light_cbam),
    ("timm.layers.cbam", "ChannelAttn", _timm_channel_attn),
    ("timm.layers.cbam", "LightChannelAttn", _timm_light_channel_attn),
    ("timm.layers.cbam", "SpatialAttn", _timm_spatial_attn),
    ("timm.layers.cbam", "LightSpatialAttn", _timm_light_spatial_attn),
    ("torchvision.ops.misc", "SqueezeExcitation", _tv_squeeze_excitation),
)


def _registry() -> Dict[type, Callable[[nn.Module], Outcome]]:
    reg = {}
    for module, name, rec in _RECOGNIZERS:
        cls = _timm_attr(module, name)
        if isinstance(cls, type):
            reg[cls] = rec
    return reg


def _attnfused_types() -> tuple:
    from . import modules

    names = ("SEBlock", "ECABlock", "CBAMBlock", "ChannelAttentionFC", "ChannelAttentionConv",
             "SpatialAttention", "FusedAttention")
    return tuple(getattr(modules, n) for n in names if hasattr(modules, n))


_HOOK_ATTRS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_STATE_HOOK_ATTRS = ("_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
                     "_load_state_dict_post_hooks")
_NOT_OVERRIDES = {"__init__", "__repr__", "extra_repr", "__module__", "__qualname__", "__doc__",
                  "__annotations__", "__dict__", "__weakref__"}


def _generic_reason(m: nn.Module) -> Optional[str]:
    """Reasons that apply to any module: hooks, parametrizations, lazy or non-float parameters."""
    for name, sub in m.named_modules():
        for attr in _HOOK_ATTRS:
            if getattr(sub, attr, None):
                where = f"on {name}" if name else "on the module"
                return f"{attr.strip('_').replace('_', ' ')} {where} (the fused op would not call them)"
        if torch.nn.utils.parametrize.is_parametrized(sub):
            return f"parametrized weights in {name or 'the module'}"
    for attr in _STATE_HOOK_ATTRS:
        if getattr(m, attr, None):
            return f"{attr.strip('_').replace('_', ' ')} on the module"
    for name, p in m.named_parameters():
        if isinstance(p, nn.parameter.UninitializedParameter):
            return f"uninitialized lazy parameter {name}"
        if not p.is_floating_point():
            return f"parameter {name} has dtype {p.dtype}"
    return None


def _lookup(cls: type, reg, official_cbam: bool) -> Union[None, str, Callable[[nn.Module], Outcome]]:
    """The recogniser for ``cls``; a reason string for a subclass that overrides methods."""
    if cls in reg:
        return reg[cls]
    for base in cls.__mro__[1:]:
        if base in reg:
            overridden = sorted(
                k for klass in cls.__mro__[: cls.__mro__.index(base)]
                for k, v in vars(klass).items()
                if k not in _NOT_OVERRIDES and hasattr(base, k) and callable(v)
            )
            if overridden:
                return f"subclass of {_qual(base)} that overrides {', '.join(overridden)}"
            return reg[base]
    if official_cbam and cls.__name__ in _OFFICIAL_BY_NAME:
        return _OFFICIAL_BY_NAME[cls.__name__]
    return None


ALREADY = "already attnfused"
SCRIPTED = "a TorchScript module (compiled code, whose modules cannot be swapped): convert before torch.jit.script"


def recognize(module: nn.Module, *, official_cbam: bool = False) -> Union[Match, str, None]:
    """What :func:`convert` would do with ``module`` itself: a :class:`Match` (fusable), a reason
    string (a known module left alone, incl. ``"already attnfused"``), or None (not an attention
    module attnfused knows)."""
    if isinstance(module, _attnfused_types()):
        return ALREADY
    rec = _lookup(type(module), _registry(), official_cbam)
    if rec is None:
        return None
    if isinstance(rec, str):
        return rec
    reason = _generic_reason(module)
    if reason:
        return reason
    try:
        return rec(module)
    except AttributeError as e:  # an attribute the class always has was deleted or renamed
        return f"unexpected structure ({e})"


# --------------------------------------------------------------------------------------------
# Building the fused module
# --------------------------------------------------------------------------------------------


def _build(module: nn.Module, match: Match, backend: str) -> Union[nn.Module, str]:
    """The FusedAttention adopting ``module``, or a reason it could not be built."""
    from .modules import FusedAttention

    for params in (match.channel_params, match.spatial_params):
        for role, path in params.items():
            try:
                obj = operator.attrgetter(path)(module)
            except AttributeError:
                return f"{role} path {path!r} does not resolve"
            if role == "bn" and not isinstance(obj, nn.modules.batchnorm._BatchNorm):
                return f"{role} path {path!r} is not a BatchNorm"
            if role != "bn" and not isinstance(obj, torch.Tensor):
                return f"{role} path {path!r} is not a tensor"
    keys = list(module.state_dict().keys())
    try:
        fused = FusedAttention(
            module,
            channel=match.channel, channel_params=dict(match.channel_params),
            spatial=match.spatial, spatial_params=dict(match.spatial_params),
            backend=backend,
        )
    except (ValueError, TypeError, NotImplementedError) as e:
        return f"FusedAttention refused it: {e}"
    if list(fused.state_dict().keys()) != keys:  # a guard: adoption must keep the keys
        raise RuntimeError(f"attnfused.convert: state_dict keys changed for {type(module).__name__}: "
                           f"{keys} -> {list(fused.state_dict().keys())}")
    return fused


def _check_backend(backend: str) -> None:
    if not isinstance(backend, str) or backend not in backend_names():
        raise ValueError(f"backend must be one of {', '.join(backend_names())}, got {backend!r}")


def convert_module(module: nn.Module, backend: str = "auto", *, official_cbam: bool = False) -> nn.Module:
    """The fused equivalent of one attention module (it adopts ``module``'s parameters, buffers
    and children: identical ``state_dict`` keys). An attnfused module is returned as it is.

    Raises ``ValueError`` with the reason when ``module`` is outside the gate family or not an
    attention module attnfused knows. ``official_cbam=True`` also recognises the official CBAM
    code's ``CBAM`` / ``ChannelGate`` / ``SpatialGate`` by structure (see
    :func:`convert_official_cbam`).
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    _check_backend(backend)
    out = recognize(module, official_cbam=official_cbam)
    if out == ALREADY:
        return module
    if out is None:
        raise ValueError(f"{_qual(module)} is not an attention module attnfused can convert "
                         "(see attnfused.convert's documentation for the known classes)")
    if isinstance(out, str):
        raise ValueError(f"{type(module).__name__} is outside attnfused's gate family: {out}")
    fused = _build(module, out, backend)
    if isinstance(fused, str):
        raise ValueError(f"{type(module).__name__}: {fused}")
    return fused


def convert_official_cbam(module: nn.Module, backend: str = "auto") -> nn.Module:
    """Fused equivalent of a module from the official CBAM code (Jongchan Park's
    ``attention-module``, ``MODELS/cbam.py``), which is not on PyPI and so cannot be recognised
    by class: it is recognised by class *names* and structure instead —

    - ``CBAM`` with children ``ChannelGate`` and (unless ``no_spatial``) ``SpatialGate``;
    - ``ChannelGate``: ``mlp = Sequential(Flatten, Linear(C, C // r), ReLU, Linear(C // r, C))``
      (biases), ``pool_types`` ``['avg', 'max']`` (or one of them) -> ``fc`` gate, ``avgmax``;
    - ``SpatialGate``: ``compress = ChannelPool`` (``cat[max_C, mean_C]``), ``spatial = BasicConv``
      whose ``conv`` is ``Conv2d(2, 1, k, padding=(k - 1) // 2, bias=False)``, ``bn``
      ``BatchNorm2d(1, eps=1e-5, momentum=0.01)`` and ``relu`` None -> maps ``max_mean`` with norm.

    The forward methods are not inspected: use this only on that code's classes. ``convert(model,
    official_cbam=True)`` does the same for every such module inside a model.
    """
    return convert_module(module, backend, official_cbam=True)


# --------------------------------------------------------------------------------------------
# The walk
# --------------------------------------------------------------------------------------------


def convert(model: nn.Module, backend: str = "auto", *, official_cbam: bool = False) -> ConvertReport:
    """Replace, in place, every known attention module inside ``model`` by a fused one.

    ``backend`` is the attnfused backend the fused modules force (``"auto"``: whatever
    ``attnfused.set_backend`` / ``use_backend`` say when they run). ``official_cbam=True`` also
    converts the official CBAM code's modules (recognised by structure; see
    :func:`convert_official_cbam`). Returns a :class:`ConvertReport`.

    Only children are replaced: if ``model`` itself is a known attention module this raises
    ``ValueError`` (use :func:`convert_module`); an attnfused module gives an empty report.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    _check_backend(backend)
    report = ConvertReport()
    root = recognize(model, official_cbam=official_cbam)
    if root == ALREADY:
        report.skipped.append(("", type(model).__name__, ALREADY))
        return report
    if isinstance(root, Match):
        raise ValueError(
            f"model is itself a {type(model).__name__}: convert() replaces modules inside a parent; "
            f"use attnfused.convert_module(model) to get its fused equivalent"
        )
    if isinstance(root, str):
        raise ValueError(
            f"model is itself a {type(model).__name__}, outside attnfused's gate family ({root}); "
            "convert() replaces modules inside a parent, and attnfused.convert_module(model) "
            "would refuse it"
        )

    seen: Dict[int, Optional[nn.Module]] = {id(model): None}  # id -> fused replacement (or None)

    def visit(parent: nn.Module, prefix: str) -> None:
        if isinstance(parent, torch.jit.ScriptModule):
            report.skipped.append((prefix[:-1], type(parent).__name__, SCRIPTED))
            return
        for name, child in list(parent._modules.items()):
            if child is None:
                continue
            if id(child) in seen:  # shared module: same replacement everywhere, reported once
                if seen[id(child)] is not None:
                    setattr(parent, name, seen[id(child)])
                continue
            qname = prefix + name
            out = recognize(child, official_cbam=official_cbam)
            if out is None:
                seen[id(child)] = None
                visit(child, qname + ".")
                continue
            if out == ALREADY:
                seen[id(child)] = None
                report.skipped.append((qname, type(child).__name__, ALREADY))
                continue
            if isinstance(out, Match):
                fused = _build(child, out, backend)
                if not isinstance(fused, str):
                    seen[id(child)] = fused
                    setattr(parent, name, fused)
                    report.replaced.append((qname, type(child).__name__, out.describe()))
                    continue
                out = fused
            seen[id(child)] = None
            report.skipped.append((qname, type(child).__name__, out))
            visit(child, qname + ".")  # its pieces may still be fusable on their own

    visit(model, "")
    return report
