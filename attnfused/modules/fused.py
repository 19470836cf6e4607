"""``FusedAttention``: any member of the gate family as a module that adopts another module's weights.

``attnfused.convert`` swaps an ecosystem module (timm ``SEModule``, torchvision
``SqueezeExcitation``, ...) for a ``FusedAttention`` that takes over the original's parameters,
buffers and sub-modules under their original names, so ``state_dict`` keys (and checkpoints) are
unchanged, ``train()``/``eval()`` still reach a spatial BatchNorm, and the forward runs the fused op.
"""

from __future__ import annotations

import operator
from typing import Mapping, Optional

import torch
from torch import Tensor, nn

from .. import functional as AF
from .._backend import backend_names, use_backend
from ..spec import ChannelSpec, SpatialSpec

_CHANNEL_ROLES = ("w1", "b1", "w2", "b2")
_SPATIAL_ROLES = ("weight", "bias", "bn")


class FusedAttention(nn.Module):
    """Runs ``y = x * ca * sa`` (:func:`attnfused.functional.attention`) with ``module``'s weights.

    ``channel_params`` / ``spatial_params`` map roles to dotted paths inside ``module``:
    channel ``"w1"``, ``"b1"``, ``"w2"``, ``"b2"`` (see :class:`~attnfused.spec.ChannelSpec`; 1x1
    conv weights are viewed as matrices); spatial ``"weight"``, ``"bias"`` and ``"bn"`` (a
    ``BatchNorm2d(1)`` sub-module, required iff ``spatial.norm``). ``backend`` other than ``"auto"``
    pins the attnfused backend for this module's calls.
    """

    def __init__(
        self,
        module: nn.Module,
        channel: Optional[ChannelSpec] = None,
        channel_params: Optional[Mapping[str, str]] = None,
        spatial: Optional[SpatialSpec] = None,
        spatial_params: Optional[Mapping[str, str]] = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if channel is None and spatial is None:
            raise ValueError("FusedAttention needs a channel spec, a spatial spec, or both")
        if backend not in backend_names():
            raise ValueError(f"backend must be one of {', '.join(backend_names())}, got {backend!r}")
        # Adopt the original's state under the same names: identical state_dict keys.
        self._parameters = module._parameters
        self._buffers = module._buffers
        self._non_persistent_buffers_set = module._non_persistent_buffers_set
        self._modules = module._modules
        self.training = module.training
        # Our own attributes get names no adopted child is likely to have (timm's CBAM has children
        # called "channel" and "spatial").
        self.original_class = f"{type(module).__module__}.{type(module).__qualname__}"
        self.channel_spec, self.spatial_spec, self.fused_backend = channel, spatial, backend
        self.channel_paths = {k: v for k, v in (channel_params or {}).items() if v}
        self.spatial_paths = {k: v for k, v in (spatial_params or {}).items() if v}
        for roles, params in ((_CHANNEL_ROLES, self.channel_paths), (_SPATIAL_ROLES, self.spatial_paths)):
            unknown = set(params) - set(roles)
            if unknown:
                raise ValueError(f"unknown parameter roles {sorted(unknown)}; expected some of {roles}")
            for role, path in params.items():
                try:
                    operator.attrgetter(path)(self)
                except AttributeError as e:
                    raise ValueError(f"{role}={path!r} does not name an attribute of {self.original_class}") from e
        if spatial is not None and spatial.norm != ("bn" in self.spatial_paths):
            raise ValueError("spatial_params must name the BatchNorm ('bn') exactly when spatial.norm is set")

    def _get(self, params: Mapping[str, str], role: str):
        path = params.get(role)
        return None if path is None else operator.attrgetter(path)(self)

    def forward(self, x: Tensor) -> Tensor:
        kwargs = {role: self._get(self.channel_paths, role) for role in _CHANNEL_ROLES}
        bn = None
        if self.spatial_spec is not None:
            kwargs.update(sw=self._get(self.spatial_paths, "weight"), sb=self._get(self.spatial_paths, "bias"))
            bn = self._get(self.spatial_paths, "bn")
            if bn is not None:
                kwargs.update(_batch_norm_args(bn))
        if self.fused_backend == "auto":
            y = AF.attention(x, self.channel_spec, spatial=self.spatial_spec, **kwargs)
        else:
            with use_backend(self.fused_backend):
                y = AF.attention(x, self.channel_spec, spatial=self.spatial_spec, **kwargs)
        if bn is not None and _counts_batches(bn):  # after the call: an input it refused is not counted
            with torch.no_grad():
                bn.num_batches_tracked.add_(1)
        return y

    def extra_repr(self) -> str:
        return f"original={self.original_class}, channel={self.channel_spec}, spatial={self.spatial_spec}"


def _counts_batches(bn: nn.modules.batchnorm._BatchNorm) -> bool:
    return bn.training and bn.track_running_stats and bn.num_batches_tracked is not None


def _batch_norm_args(bn: nn.modules.batchnorm._BatchNorm) -> dict:
    """What ``nn.BatchNorm2d.forward`` would use: batch statistics in training (or without running
    statistics) and the momentum (cumulative average when ``momentum is None``: this batch counted,
    which ``forward`` does once the op has taken the input)."""
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if _counts_batches(bn) and bn.momentum is None:
        momentum = 1.0 / (float(bn.num_batches_tracked) + 1.0)
    use_running = not bn.training or bn.track_running_stats
    return dict(
        bn_weight=bn.weight, bn_bias=bn.bias,
        bn_mean=bn.running_mean if use_running else None, bn_var=bn.running_var if use_running else None,
        bn_eps=bn.eps, bn_train=bn.training or bn.running_mean is None, bn_momentum=momentum,
    )
