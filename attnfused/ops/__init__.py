"""Block-level ops (``torch.library`` custom ops with autograd); see :mod:`.attention`."""

from .attention import attention

__all__ = ["attention"]
