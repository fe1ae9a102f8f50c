"""Batches CIR samples: stacks each image key, normalises, moves to the device."""
from typing import Optional, Sequence

import torch
from mmengine.model import BaseDataPreprocessor

from ssn_plugin.registry import MODELS
from .clip_backbone import DEFAULT_PREPROCESS


@MODELS.register_module()
class CIRDataPreprocessor(BaseDataPreprocessor):
    """Turn ``inputs`` = {image key: list of uint8 [3, H, W] tensors} into normalised batches.

    The normalisation is the one the backbone's weights were trained with: the model that owns
    this preprocessor calls :meth:`set_model_normalization` with its backbone's statistics
    (OpenAI's for ``openai``/``laion*`` weights, others for other tags). A ``mean`` or ``std``
    given here wins over the model's.

    Args:
        mean (Sequence[float], optional): Per-channel mean on the [0, 1] scale. None = the
            model's. Defaults to None.
        std (Sequence[float], optional): Per-channel std on the [0, 1] scale. None = the
            model's. Defaults to None.
    """

    def __init__(self, mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None):
        super().__init__()
        self._explicit = dict(mean=mean is not None, std=std is not None)
        # open_clip's defaults (OpenAI's statistics) until the model sets its own.
        self.register_buffer(
            'mean', self._as_buffer(DEFAULT_PREPROCESS['mean'] if mean is None else mean), False)
        self.register_buffer(
            'std', self._as_buffer(DEFAULT_PREPROCESS['std'] if std is None else std), False)

    @staticmethod
    def _as_buffer(values: Sequence[float]) -> torch.Tensor:
        values = torch.tensor([float(v) for v in values])
        if values.shape != (3, ):
            raise ValueError(f'mean/std need 3 values (R, G, B), got {values.tolist()}')
        return values.view(-1, 1, 1) * 255

    def set_model_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Use the model's statistics for whatever was not given explicitly."""
        for name, values in (('mean', mean), ('std', std)):
            if not self._explicit[name]:
                getattr(self, name).copy_(self._as_buffer(values))

    def forward(self, data: dict, training: bool = False) -> dict:
        data = self.cast_data(data)
        inputs = {}
        for key, images in data['inputs'].items():
            batch = torch.stack(list(images)) if not torch.is_tensor(images) else images
            inputs[key] = (batch.float() - self.mean) / self.std
        return dict(inputs=inputs, data_samples=data.get('data_samples'))
