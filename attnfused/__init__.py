"""attnfused: SE, ECA and CBAM attention blocks as fused kernels with one-pass autograd.

Layers: :mod:`attnfused.reference` (eager spec) -> :mod:`attnfused.kernels` (one provider per
backend) -> :mod:`attnfused.ops` (the block op: custom op + autograd) -> :mod:`attnfused.functional`
and :mod:`attnfused.modules`.
"""

from . import functional, reference
from ._backend import BACKENDS, get_backend, set_backend, use_backend
from .conversion import ConvertReport, convert, convert_module, convert_official_cbam
from .spec import ChannelSpec, SpatialSpec
from .modules import (
    CBAMBlock,
    Channel_Attention_Module_Conv,
    Channel_Attention_Module_FC,
    ChannelAttentionConv,
    ChannelAttentionFC,
    ECABlock,
    FusedAttention,
    SEBlock,
    Spatial_Attention_Module,
    SpatialAttention,
)

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "get_backend",
    "set_backend",
    "use_backend",
    "functional",
    "reference",
    "convert",
    "convert_module",
    "convert_official_cbam",
    "ConvertReport",
    "ChannelSpec",
    "SpatialSpec",
    "FusedAttention",
    "SEBlock",
    "ECABlock",
    "CBAMBlock",
    "ChannelAttentionFC",
    "ChannelAttentionConv",
    "SpatialAttention",
    "Channel_Attention_Module_FC",
    "Channel_Attention_Module_Conv",
    "Spatial_Attention_Module",
]
