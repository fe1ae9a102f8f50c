"""The fusion transformer shared by SSN's query and target sides."""
import contextlib
from typing import Optional

import torch
from torch import nn

from ssn_plugin.registry import MODELS


@contextlib.contextmanager
def _without_fastpath():
    """Switch off the fused inference kernel of ``nn.TransformerEncoderLayer`` for a call.

    torch < 2.6 takes it in eval mode under CPU autocast and fails (bf16 inputs, fp32 weights).
    """
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


@MODELS.register_module()
class SSNFusion(nn.Module):
    """A stack of post-norm ``nn.TransformerEncoderLayer`` (the release uses one layer).

    Any module registered in ``ssn_plugin.registry.MODELS`` with the same call signature
    (``width`` keyword at build time; ``forward(tokens, key_padding_mask)``) can replace it.

    Args:
        width (int): Token width W; SSN passes it when it builds the fusion module.
        num_layers (int): Number of encoder layers. Defaults to 1.
        num_heads (int): Attention heads. Defaults to 8.
        ffn_dim (int): Hidden size of the feed-forward block. Defaults to 2048.
        dropout (float): Dropout in attention and feed-forward. Defaults to 0.1.
    """

    def __init__(self, width: int, num_layers: int = 1, num_heads: int = 8,
                 ffn_dim: int = 2048, dropout: float = 0.1):
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            d_model=width, nhead=num_heads, dim_feedforward=ffn_dim, dropout=dropout,
            batch_first=True)
        # No nested-tensor fast path: padded positions keep real (ignored) values.
        self.encoder = nn.TransformerEncoder(layer, num_layers=num_layers,
                                             enable_nested_tensor=False)

    def forward(self, tokens: torch.Tensor,
                key_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Fuse tokens [B, S, W]; ``key_padding_mask`` [B, S] is True where a key is ignored."""
        context = (_without_fastpath() if torch.is_autocast_enabled(tokens.device.type)
                   else contextlib.nullcontext())
        with context:
            return self.encoder(tokens, src_key_padding_mask=key_padding_mask)
