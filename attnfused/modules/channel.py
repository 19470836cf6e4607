"""Channel attention modules: SE, ECA, and CBAM's channel stage (FC and Conv variants).

Constructor arguments and ``state_dict`` keys match the source text's classes, so their
checkpoints load with ``strict=True``: ``fc_layers.0.weight`` / ``fc_layers.2.weight`` (FC gate),
``conv.weight`` (1-D conv gate, ``[1, 1, k]``).
"""

from __future__ import annotations

from torch import Tensor, nn

from .. import functional as AF
from ._args import eca_kernel_size, hidden_width, one_of, positive_int


def _fc_layers(channels: int, ratio: int) -> nn.Sequential:
    hidden = hidden_width(channels, ratio)
    channels = int(channels)
    return nn.Sequential(
        nn.Linear(channels, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, channels, bias=False)
    )


def _fc_weights(fc_layers: nn.Sequential) -> tuple[Tensor, Tensor]:
    """The two Linear weights of :func:`_fc_layers`. By key: ``Sequential[i]`` walks the container
    (~2 us a call on CPU, as much as a whole pass over a small tensor)."""
    layers = fc_layers._modules
    return layers["0"].weight, layers["2"].weight


def _eca_conv(channels: int, gamma: float, b: float) -> nn.Conv1d:
    k = eca_kernel_size(channels, gamma, b)
    return nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)


class SEBlock(nn.Module):
    """Squeeze-and-excitation: ``x * sigmoid(W2 relu(W1 pool(x)))`` with ``pool`` "avg" or "max"."""

    def __init__(self, mode: str, channels: int, ratio: int) -> None:
        super().__init__()
        self.mode = one_of("mode", mode, ("avg", "max"))
        self.channels = positive_int("channels", channels)
        self.fc_layers = _fc_layers(channels, ratio)

    def forward(self, x: Tensor) -> Tensor:
        return AF.se(x, *_fc_weights(self.fc_layers), self.mode)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, channels={self.channels}"


class ECABlock(nn.Module):
    """Efficient channel attention: ``x * sigmoid(conv1d_C(avg(x)))`` with an adaptive odd kernel."""

    def __init__(self, channels: int, gamma: float = 2, b: float = 1) -> None:
        super().__init__()
        self.conv = _eca_conv(channels, gamma, b)
        self.channels = int(channels)

    def forward(self, x: Tensor) -> Tensor:
        return AF.eca(x, self.conv.weight)


class ChannelAttentionFC(nn.Module):
    """CBAM channel attention with the shared FC gate on avg- and max-pooled stats."""

    def __init__(self, channels: int, ratio: int) -> None:
        super().__init__()
        self.fc_layers = _fc_layers(channels, ratio)

    def gate_weights(self) -> tuple[Tensor, Tensor, str]:
        return (*_fc_weights(self.fc_layers), "fc")

    def forward(self, x: Tensor) -> Tensor:
        return AF.channel_attention(x, *self.gate_weights())


class ChannelAttentionConv(nn.Module):
    """CBAM channel attention with ECA's 1-D conv gate on avg- and max-pooled stats."""

    def __init__(self, channels: int, gamma: float = 2, b: float = 1) -> None:
        super().__init__()
        self.conv = _eca_conv(channels, gamma, b)

    def gate_weights(self) -> tuple[Tensor, None, str]:
        return self.conv.weight, None, "conv"

    def forward(self, x: Tensor) -> Tensor:
        return AF.channel_attention(x, *self.gate_weights())
