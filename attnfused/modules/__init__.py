"""``nn.Module``s compatible with the source text's classes (arguments, ``state_dict`` keys)."""

from .cbam import CBAMBlock, SpatialAttention, make_channel_attention
from .channel import ChannelAttentionConv, ChannelAttentionFC, ECABlock, SEBlock
from .fused import FusedAttention


class Channel_Attention_Module_FC(ChannelAttentionFC):
    """Source-text name of :class:`ChannelAttentionFC`."""


class Channel_Attention_Module_Conv(ChannelAttentionConv):
    """Source-text name of :class:`ChannelAttentionConv`."""


class Spatial_Attention_Module(SpatialAttention):
    """Source-text name of :class:`SpatialAttention` (its argument is called ``k``)."""

    def __init__(self, k: int) -> None:
        super().__init__(k)


__all__ = [
    "SEBlock",
    "ECABlock",
    "CBAMBlock",
    "ChannelAttentionFC",
    "ChannelAttentionConv",
    "SpatialAttention",
    "make_channel_attention",
    "FusedAttention",
    "Channel_Attention_Module_FC",
    "Channel_Attention_Module_Conv",
    "Spatial_Attention_Module",
]
