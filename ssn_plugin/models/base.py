"""What every CIR model of ssn_plugin shares: the mode dispatch and the feature contract."""
import copy
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.model import BaseModel
from mmengine.structures import BaseDataElement
from torch import nn

from ssn_plugin.registry import MODELS


class BaseCIRModel(BaseModel):
    """A CLIP-based composed-retrieval model: queries (reference image + text) and gallery
    images become L2-normalised features in one space, ranked by cosine similarity.

    Subclasses build ``self.clip`` (an :class:`OpenCLIPBackbone`) and implement
    :meth:`query_features`, :meth:`gallery_features` and :meth:`loss`; the dispatch,
    ``predict`` and the data preprocessor (normalised with the backbone's statistics) are
    shared, so every model runs through the same datasets, hooks, metrics and tools.

    Args:
        backbone (dict): Config of the CLIP backbone.
        data_preprocessor (dict | nn.Module, optional): Defaults to
            ``dict(type='CIRDataPreprocessor')``.
        init_cfg (dict, optional): MMEngine initialisation config. Defaults to None.
    """

    def __init__(self, backbone: dict,
                 data_preprocessor: Optional[Union[dict, nn.Module]] = None,
                 init_cfg: Optional[dict] = None):
        if data_preprocessor is None:
            data_preprocessor = dict(type='CIRDataPreprocessor')
        if isinstance(data_preprocessor, dict):
            # Built here: BaseModel would look it up in mmengine's root registry.
            data_preprocessor = MODELS.build(copy.deepcopy(data_preprocessor))
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.clip = MODELS.build(copy.deepcopy(backbone))
        preprocess = self.clip.preprocess_cfg
        if hasattr(self.data_preprocessor, 'set_model_normalization'):
            self.data_preprocessor.set_model_normalization(preprocess['mean'], preprocess['std'])

    @property
    def image_size(self) -> Tuple[int, int]:
        """(H, W): the input resolution of the image tower; pipelines that leave their resize
        ``size`` unset get it (:class:`~ssn_plugin.engine.ImageSizeFromModelHook`)."""
        return self.clip.image_size

    def forward(self,
                inputs: Dict[str, torch.Tensor],
                data_samples: Optional[List[BaseDataElement]] = None,
                mode: str = 'tensor'):
        """Dispatch to :meth:`loss`, :meth:`predict` or :meth:`extract_feat`.

        Args:
            inputs (dict): Normalised image batches from :class:`CIRDataPreprocessor`:
                ``ref_img`` and ``tgt_img`` (training), ``ref_img`` (queries) or ``img``
                (gallery images).
            data_samples (list, optional): One element per sample; queries carry ``text``.
            mode (str): ``'loss'`` (called by ``train_step``): returns a dict of losses;
                ``'predict'`` (called by ``val_step``/``test_step``): returns the data samples
                with ``query_feat`` or ``gallery_feat`` set; ``'tensor'``: returns the features
                as a tensor [B, D]. Defaults to ``'tensor'``.
        """
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self.extract_feat(inputs, data_samples)
        raise ValueError(f'Invalid mode {mode!r}: expected "loss", "predict" or "tensor".')

    @staticmethod
    def _texts(data_samples: Sequence[BaseDataElement]) -> List[str]:
        return [sample.text for sample in data_samples]

    @staticmethod
    def _image_keys(data_samples: Optional[Sequence[BaseDataElement]],
                    field: str) -> Optional[List[str]]:
        """The images' file paths (``field`` of each sample) as keys of the backbone's feature
        cache; None when a sample lacks one (e.g. an uploaded image)."""
        if not data_samples:
            return None
        keys = [sample.get(field) for sample in data_samples]
        return None if any(not isinstance(k, str) for k in keys) else keys

    def extract_feat(self, inputs: Dict[str, torch.Tensor],
                     data_samples: Optional[List[BaseDataElement]] = None) -> torch.Tensor:
        """L2-normalised query features (``ref_img`` + texts) or gallery features (``img``)."""
        if 'ref_img' in inputs:
            return self.query_features(inputs['ref_img'], self._texts(data_samples),
                                       image_keys=self._image_keys(data_samples, 'ref_img_path'))
        if 'img' in inputs:
            return self.gallery_features(inputs['img'],
                                         image_keys=self._image_keys(data_samples, 'img_path'))
        raise KeyError(f'inputs must hold "ref_img" (queries) or "img" (gallery); got '
                       f'{sorted(inputs)}')

    def predict(self, inputs: Dict[str, torch.Tensor],
                data_samples: List[BaseDataElement]) -> List[BaseDataElement]:
        """Set ``query_feat`` (queries) or ``gallery_feat`` (gallery images) on each sample."""
        feats = self.extract_feat(inputs, data_samples)
        key = 'query_feat' if 'ref_img' in inputs else 'gallery_feat'
        for sample, feat in zip(data_samples, feats):
            sample.set_field(feat, key)
        return data_samples

    def query_features(self, ref_img: torch.Tensor, texts: Sequence[str],
                       image_keys: Optional[Sequence[str]] = None) -> torch.Tensor:
        """L2-normalised composed queries [B, D]; ``image_keys`` (the reference files) let
        the backbone reuse cached features of a frozen image tower."""
        raise NotImplementedError

    def gallery_features(self, images: torch.Tensor,
                         image_keys: Optional[Sequence[str]] = None) -> torch.Tensor:
        """L2-normalised gallery / target features [B, D] (``image_keys`` as above)."""
        raise NotImplementedError

    def loss(self, inputs: Dict[str, torch.Tensor],
             data_samples: List[BaseDataElement]) -> Dict[str, torch.Tensor]:
        """Losses of a batch of (reference, caption, target) triplets."""
        raise NotImplementedError
