"""Batches CIR samples: stacks each image key, normalises, moves to the device."""
from typing import Sequence

import torch
from mmengine.model import BaseDataPreprocessor

from ssn_plugin.registry import MODELS

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@MODELS.register_module()
class CIRDataPreprocessor(BaseDataPreprocessor):
    """Turn ``inputs`` = {image key: list of uint8 [3, H, W] tensors} into normalised batches.

    Args:
        mean (Sequence[float]): Per-channel mean on the [0, 1] scale. Defaults to CLIP's.
        std (Sequence[float]): Per-channel std on the [0, 1] scale. Defaults to CLIP's.
    """

    def __init__(self, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD):
        super().__init__()
        self.register_buffer('mean', torch.tensor(mean).view(-1, 1, 1) * 255, False)
        self.register_buffer('std', torch.tensor(std).view(-1, 1, 1) * 255, False)

    def forward(self, data: dict, training: bool = False) -> dict:
        data = self.cast_data(data)
        inputs = {}
        for key, images in data['inputs'].items():
            batch = torch.stack(list(images)) if not torch.is_tensor(images) else images
            inputs[key] = (batch.float() - self.mean) / self.std
        return dict(inputs=inputs, data_samples=data.get('data_samples'))
