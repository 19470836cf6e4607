"""CBAM: spatial attention and the full block (channel stage, then spatial stage, one fused op).

``state_dict`` keys match the source text: ``channel_attention_block.fc_layers.{0,2}.weight`` or
``channel_attention_block.conv.weight``, and ``spatial_attention_block.conv.weight`` ``[1, 2, k, k]``.
"""

from __future__ import annotations

from typing import Optional, Union

from torch import Tensor, nn

from .. import functional as AF
from ._args import one_of, positive_int
from .channel import ChannelAttentionConv, ChannelAttentionFC

SPATIAL_KERNEL_SIZES = (3, 5, 7)


class SpatialAttention(nn.Module):
    """``x * sigmoid(conv2d([max_C x, mean_C x]))`` with a ``k x k`` conv, k in {3, 5, 7}."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        k = one_of("kernel_size", positive_int("kernel_size", kernel_size), SPATIAL_KERNEL_SIZES)
        self.conv = nn.Conv2d(2, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return AF.spatial_attention(x, self.conv.weight)


def make_channel_attention(
    mode: str, channels: Optional[int], ratio: Optional[int] = None,
    gamma: Optional[float] = None, b: Optional[float] = None,
) -> Union[ChannelAttentionFC, ChannelAttentionConv]:
    """CBAM's channel stage by mode: "FC" needs ``channels`` and ``ratio``; "Conv" needs
    ``channels``, ``gamma`` and ``b``."""
    one_of("channel_attention_mode", mode, ("FC", "Conv"))
    needed = {"channels": channels, "ratio": ratio} if mode == "FC" else {"channels": channels, "gamma": gamma, "b": b}
    missing = [k for k, v in needed.items() if v is None]
    if missing:
        raise ValueError(f"channel_attention_mode={mode!r} needs {', '.join(missing)} (got None)")
    if mode == "FC":
        return ChannelAttentionFC(channels, ratio)
    return ChannelAttentionConv(channels, gamma, b)


class CBAMBlock(nn.Module):
    """Convolutional block attention: channel attention ("FC" or "Conv") then spatial attention.

    Runs as one fused block: ``x * ca * sa`` without materialising ``x * ca``.
    """

    def __init__(
        self,
        channel_attention_mode: str,
        spatial_attention_kernel_size: int,
        channels: Optional[int] = None,
        ratio: Optional[int] = None,
        gamma: Optional[float] = None,
        b: Optional[float] = None,
    ) -> None:
        super().__init__()
        self.channel_attention_block = make_channel_attention(channel_attention_mode, channels, ratio, gamma, b)
        self.spatial_attention_block = SpatialAttention(spatial_attention_kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        w1, w2, gate = self.channel_attention_block.gate_weights()
        return AF.cbam(x, w1, w2, gate, self.spatial_attention_block.conv.weight)
