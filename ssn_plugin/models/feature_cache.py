"""Cache the frozen image tower's outputs: an image's features computed once, then reused.

While the CLIP image tower is frozen (the Fashion-IQ recipe freezes it from the second epoch),
its outputs for an image (the pooled embedding ``v`` and the token states ``V``) depend on the
image alone. :class:`ImageFeatureCache` keeps them by image key (the file path the data samples
carry) for the training steps and the gallery at validation; the backbone clears it whenever the
tower's weights may change (unfreezing, loading a state dict).
"""
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch


class ImageFeatureCache:
    """Image key -> (``v`` [D], ``V`` [N, C]) of a frozen image tower.

    Args:
        dtype (torch.dtype): Storage type. float16 halves the memory (ViT-B/32: 76 KB per
            image, ViT-L/14: 528 KB); the difference it makes is bounded by a test.
            Defaults to torch.float16.
        device (str, optional): Where entries are kept: None = where they were computed (the
            GPU: no transfers), ``'cpu'`` = host memory (for large towers and datasets).
            Defaults to None.
    """

    def __init__(self, dtype: torch.dtype = torch.float16, device: Optional[str] = None):
        self.dtype = dtype
        self.device = device
        self.entries: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self.entries)

    def clear(self) -> None:
        self.entries.clear()

    def encode(self, images: torch.Tensor, keys: Sequence[str],
               encode: Callable[[torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]
               ) -> Tuple[torch.Tensor, torch.Tensor]:
        """The features of ``images``: cached ones looked up, the others computed by ``encode``
        (without gradients: the tower is frozen) and stored.

        Returns:
            tuple: ``v`` [B, D] and ``V`` [B, N, C], in the type the tower's projection
            returns (the autocast type under autocast, else the images' type).
        """
        missing: List[int] = [i for i, key in enumerate(keys) if key not in self.entries]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            with torch.no_grad():
                pooled, tokens = encode(images[missing])
            for j, i in enumerate(missing):
                self.entries[keys[i]] = (
                    pooled[j].detach().to(self.device or pooled.device, self.dtype),
                    tokens[j].detach().to(self.device or tokens.device, self.dtype))
        # What the tower returns: the autocast type under autocast, else the images' type.
        device_type = images.device.type
        out_dtype = (torch.get_autocast_dtype(device_type)
                     if torch.is_autocast_enabled(device_type) else images.dtype)
        # Outside autocast: its type promotion of stack rejects fp16 inputs under bf16.
        with torch.autocast(device_type, enabled=False):
            pooled = torch.stack([self.entries[k][0] for k in keys]).to(images.device,
                                                                          out_dtype)
            tokens = torch.stack([self.entries[k][1] for k in keys]).to(images.device,
                                                                          out_dtype)
        return pooled, tokens
