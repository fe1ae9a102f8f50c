"""CLIP4Cir's Combiner (Baldrati et al., "Conditioned and composed image retrieval combining and
partially fine-tuning CLIP-based features", CVPR-W 2022): SSN's parent, which composes the
reference image and the text in one learned step, on CLIP's pooled embeddings."""
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ssn_plugin.registry import MODELS
from .clip_baseline import CLIPBaseline


@MODELS.register_module()
class Combiner(CLIPBaseline):
    """The Combiner on a frozen CLIP (CLIP4Cir's second stage).

    With v and t CLIP's raw (unnormalised) image and text embeddings of width D:

    - p_t = dropout(ReLU(W_t t)), p_v = dropout(ReLU(W_v v)), both of width P;
    - c = [p_t, p_v] (width 2P);
    - h = dropout(ReLU(W_c c)) (width H);
    - lambda = sigmoid(W_2 dropout(ReLU(W_1 c))) (a scalar per query, W_1 of width H);
    - query = normalize(W_o h + lambda t + (1 - lambda) v);

    a gallery image is normalize(v). Dropout is 0.5 everywhere; trained with
    cross-entropy of 100 x cos(query_i, target_j) (:class:`QueryToTargetCELoss`). CLIP4Cir's
    RN50x4 widths are P = 2560 and H = 5120 on D = 640: P = 4D and H = 8D, the defaults here.
    Stage 1 (CLIP fine-tuned with the raw sum) is ``CLIPBaseline(combine='raw')`` with the same
    loss; this stage loads its weights (``load_from``) and trains the combiner only.

    Args:
        backbone (dict): Config of the :class:`OpenCLIPBackbone` (frozen here).
        projection_dim (int, optional): P. Defaults to 4 x the embedding width.
        hidden_dim (int, optional): H. Defaults to 8 x the embedding width.
        dropout (float): Defaults to 0.5.
        loss (dict): Defaults to ``dict(type='QueryToTargetCELoss')``.
        data_preprocessor (dict | nn.Module, optional): Defaults to
            ``dict(type='CIRDataPreprocessor')``.
        init_cfg (dict, optional): MMEngine initialisation config. Defaults to None.

    Examples:
        >>> import torch
        >>> from ssn_plugin.models import Combiner
        >>> model = Combiner(dict(type='OpenCLIPBackbone', arch='RN50')).eval()  # random init
        >>> images = torch.randn(2, 3, 224, 224)
        >>> model.query_features(images, ['make it red', 'remove the dog']).shape
        torch.Size([2, 1024])
    """

    def __init__(self, backbone: dict, projection_dim: Optional[int] = None,
                 hidden_dim: Optional[int] = None, dropout: float = 0.5,
                 loss: Optional[dict] = None,
                 data_preprocessor: Optional[Union[dict, nn.Module]] = None,
                 init_cfg: Optional[dict] = None):
        # CLIPBaseline's query, gallery and loss paths, with the learned composition below
        # in place of its sum (its raw embeddings go in).
        super().__init__(backbone, mode='sum', combine='raw',
                         loss=dict(type='QueryToTargetCELoss') if loss is None else loss,
                         data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        width = self.clip.embed_dim
        projection_dim = projection_dim or 4 * width
        hidden_dim = hidden_dim or 8 * width
        self.clip.requires_grad_(False)  # stage 2: CLIP stays as stage 1 left it
        self.combiner = nn.ModuleDict(dict(
            text_projection=nn.Linear(width, projection_dim),
            image_projection=nn.Linear(width, projection_dim),
            combiner_layer=nn.Linear(2 * projection_dim, hidden_dim),
            output_layer=nn.Linear(hidden_dim, width),
            scalar_hidden=nn.Linear(2 * projection_dim, hidden_dim),
            scalar_out=nn.Linear(hidden_dim, 1)))
        self.dropout = nn.Dropout(dropout)

    def train(self, mode: bool = True) -> 'Combiner':
        super().train(mode)
        self.clip.eval()  # frozen: no dropout or batch statistics of CLIP change
        return self

    def compose(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """The query from raw image and text embeddings [B, D] (the class docstring's
        equations)."""
        layers, drop = self.combiner, self.dropout
        text_proj = drop(F.relu(layers['text_projection'](text)))
        image_proj = drop(F.relu(layers['image_projection'](image)))
        joint = torch.cat([text_proj, image_proj], dim=-1)
        hidden = drop(F.relu(layers['combiner_layer'](joint)))
        scalar = torch.sigmoid(layers['scalar_out'](drop(F.relu(layers['scalar_hidden'](joint)))))
        output = layers['output_layer'](hidden) + scalar * text + (1 - scalar) * image
        return F.normalize(output, dim=-1)

    def _combine(self, ref_img: torch.Tensor, text_embedding,
                 image_keys: Optional[Sequence[str]] = None) -> torch.Tensor:
        return self.compose(self._raw_image_embedding(ref_img, image_keys),
                            text_embedding().float())
