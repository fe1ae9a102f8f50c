"""The plain CLIP composition baseline of composed image retrieval."""
import copy
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmengine.structures import BaseDataElement
from torch import nn

from ssn_plugin.registry import MODELS
from .base import BaseCIRModel


@MODELS.register_module()
class CLIPBaseline(BaseCIRModel):
    """CLIP "image + text": the query is the normalised sum of the reference image's and the
    text's CLIP embeddings; a gallery image is its normalised image embedding.

    Two sums are in use, and they rank differently: ``combine='raw'`` is CLIP4Cir's zero-shot
    sum, ``normalize(v + t)`` of the raw embeddings (its ``element_wise_sum`` applied to
    unnormalised features), where the longer of the two vectors weighs more;
    ``combine='normalized'`` is ``normalize(normalize(v) + normalize(t))``, equal weight to
    image and text.

    The usual reference point of CIR papers, zero-shot (no training: ``tools/test.py CONFIG
    --no-checkpoint``) or fine-tuned with the same symmetric InfoNCE as SSN (its ``loss_con``).
    ``mode='text'`` and ``mode='image'`` use one modality only: the text-only and image-only
    baselines that show how much each part of the query carries.

    Args:
        backbone (dict): Config of the :class:`OpenCLIPBackbone`.
        mode (str): ``'sum'``, ``'text'`` or ``'image'``. Defaults to 'sum'.
        combine (str): How ``'sum'`` adds them: ``'normalized'`` or ``'raw'`` (see above).
            Defaults to 'normalized'.
        loss (dict): Config of the loss; its KL term does not apply (no second branch).
            Defaults to ``dict(type='SSNLoss')``.
        data_preprocessor (dict | nn.Module, optional): Defaults to
            ``dict(type='CIRDataPreprocessor')``.
        init_cfg (dict, optional): MMEngine initialisation config. Defaults to None.

    Examples:
        >>> import torch
        >>> from ssn_plugin.models import CLIPBaseline
        >>> model = CLIPBaseline(dict(type='OpenCLIPBackbone', arch='ViT-B-32'))  # random init
        >>> images = torch.randn(2, 3, 224, 224)
        >>> query = model.query_features(images, ['make it red', 'remove the dog'])
        >>> query.shape, model.gallery_features(images).shape
        (torch.Size([2, 512]), torch.Size([2, 512]))
    """

    MODES = ('sum', 'text', 'image')
    COMBINES = ('normalized', 'raw')

    def __init__(self, backbone: dict, mode: str = 'sum', combine: str = 'normalized',
                 loss: Optional[dict] = None,
                 data_preprocessor: Optional[Union[dict, nn.Module]] = None,
                 init_cfg: Optional[dict] = None):
        if mode not in self.MODES:
            raise ValueError(f'CLIPBaseline mode {mode!r}: expected one of {self.MODES}')
        if combine not in self.COMBINES:
            raise ValueError(f'CLIPBaseline combine {combine!r}: expected one of '
                             f'{self.COMBINES}')
        super().__init__(backbone, data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.mode, self.combine = mode, combine
        self.loss_module = MODELS.build(
            dict(type='SSNLoss') if loss is None else copy.deepcopy(loss))

    def _raw_image_embedding(self, images: torch.Tensor,
                             image_keys: Optional[Sequence[str]] = None) -> torch.Tensor:
        return self.clip.encode_image(images, image_keys)[0].float()

    def _image_embedding(self, images: torch.Tensor,
                         image_keys: Optional[Sequence[str]] = None) -> torch.Tensor:
        return F.normalize(self._raw_image_embedding(images, image_keys), dim=-1)

    def query_features(self, ref_img: torch.Tensor, texts: Sequence[str],
                       image_keys: Optional[Sequence[str]] = None) -> torch.Tensor:
        if ref_img.shape[0] != len(texts):
            raise ValueError(f'{ref_img.shape[0]} reference images but {len(texts)} captions')
        return self._combine(ref_img, lambda: self.clip.encode_text(texts)[0], image_keys)

    def query_features_from_tokens(self, ref_img: torch.Tensor, tokens: torch.Tensor
                                   ) -> torch.Tensor:
        """The query from token ids [B, L] (0-padded; the exported query composer)."""
        return self._combine(
            ref_img, lambda: self.clip.encode_tokens(tokens, self.clip.padding_mask(tokens))[0])

    def _combine(self, ref_img: torch.Tensor, text_embedding,
                 image_keys: Optional[Sequence[str]] = None) -> torch.Tensor:
        if self.mode == 'image':
            return self._image_embedding(ref_img, image_keys)
        text = text_embedding().float()
        if self.mode == 'text':
            return F.normalize(text, dim=-1)
        image = self._raw_image_embedding(ref_img, image_keys)
        if self.combine == 'normalized':
            image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
        return F.normalize(image + text, dim=-1)

    def gallery_features(self, images: torch.Tensor,
                         image_keys: Optional[Sequence[str]] = None) -> torch.Tensor:
        return self._image_embedding(images, image_keys)

    def loss(self, inputs: Dict[str, torch.Tensor],
             data_samples: List[BaseDataElement]) -> Dict[str, torch.Tensor]:
        query = self.query_features(inputs['ref_img'], self._texts(data_samples),
                                    self._image_keys(data_samples, 'ref_img_path'))
        target = self.gallery_features(inputs['tgt_img'],
                                       self._image_keys(data_samples, 'tgt_img_path'))
        return self.loss_module(query, None, target)
