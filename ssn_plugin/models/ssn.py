"""SSN: Semantic Shift Network for composed image retrieval (docs/method.md, sections 1 and 2)."""
import copy
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.structures import BaseDataElement
from torch import nn

from ssn_plugin.registry import MODELS
from .base import BaseCIRModel

# Fixed scale of the learned residuals added to CLIP's global embeddings (from the release).
RESIDUAL_SCALE = 0.01


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of tokens [B, L, W] over positions where mask [B, L] is True."""
    mask = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


@MODELS.register_module()
class SSN(BaseCIRModel):
    """Semantic Shift Network.

    The text is split by a learned token gate into an upgradation part L+ and a degradation
    part L-. L- selects, through a second gate, which reference image tokens survive: the
    visual prototype I0 (and its complement I-). A shared transformer fuses (I0, L+) and
    (I-, L-); a composition head turns each into a query (q+ and q-). Gallery images go
    through the same projection and fusion layer (image tokens only). Retrieval uses q+.

    Args:
        backbone (dict): Config of the CLIP backbone, e.g.
            ``dict(type='OpenCLIPBackbone', arch='ViT-B-32', pretrained='openai')``.
        fusion (dict): Config of the fusion module; ``width`` is filled in by SSN.
            Defaults to ``dict(type='SSNFusion')`` (one layer, 8 heads, FFN 2048, dropout 0.1).
        loss (dict): Config of the loss. Defaults to ``dict(type='SSNLoss')``.
        hidden_dim (int, optional): W, the token width of the fusion space. None means the text
            token width, as in the release (W = 512 for ViT-B/32). Defaults to None.
        projection_dim (int, optional): P; the composition head's hidden size is 2P. None means
            W, as in the release's command line (P = W = 512). Defaults to None.
        fusion_padding_mask (bool): Mask caption padding in the fusion transformer, so that a
            query's feature does not depend on the other captions of its batch. False
            reproduces the release, which attends to padding. Defaults to True.
        degradation (bool): False switches the decomposition off: both gates pass everything
            (L+ = T, I0 = V) and L-, I- are zero. An ablation switch. Defaults to True.
        data_preprocessor (dict | nn.Module, optional): Defaults to
            ``dict(type='CIRDataPreprocessor')``.
        init_cfg (dict, optional): MMEngine initialisation config. Defaults to None.
    """

    def __init__(self,
                 backbone: dict,
                 fusion: Optional[dict] = None,
                 loss: Optional[dict] = None,
                 hidden_dim: Optional[int] = None,
                 projection_dim: Optional[int] = None,
                 fusion_padding_mask: bool = True,
                 degradation: bool = True,
                 data_preprocessor: Optional[Union[dict, nn.Module]] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(backbone, data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        embed_dim = self.clip.embed_dim
        text_width = self.clip.text_width
        width = hidden_dim or text_width
        head_dim = 2 * (projection_dim or width)
        self.width = width
        self.fusion_padding_mask = fusion_padding_mask
        self.degradation = degradation

        # The release feeds text tokens and the fused class token straight into W-sized slots,
        # which only type-checks when W == C_t == D; projections cover the other cases.
        self.image_token_proj = nn.Linear(self.clip.vision_width, width)
        self.text_token_proj = (nn.Identity() if text_width == width
                                else nn.Linear(text_width, width))
        self.text_token_selection = nn.Linear(2 * width, 1)
        self.image_token_selection = nn.Linear(2 * width, 1)
        self.token_type_embeddings = nn.Embedding(2, width)

        fusion_cfg = dict(type='SSNFusion') if fusion is None else copy.deepcopy(fusion)
        fusion_cfg.setdefault('width', width)
        self.fusion = MODELS.build(fusion_cfg)

        self.combiner_layer = nn.Sequential(nn.Linear(2 * width, head_dim), nn.ReLU())
        self.dynamic_scalar = nn.Sequential(
            nn.Linear(2 * width, head_dim), nn.ReLU(), nn.Linear(head_dim, 1), nn.Sigmoid())
        self.output_layer = nn.Linear(head_dim, embed_dim)
        self.target_proj = nn.Identity() if width == embed_dim else nn.Linear(width, embed_dim)

        self.loss_module = MODELS.build(
            dict(type='SSNLoss') if loss is None else copy.deepcopy(loss))

    # ------------------------------------------------------------------ training
    def loss(self, inputs: Dict[str, torch.Tensor],
             data_samples: List[BaseDataElement]) -> Dict[str, torch.Tensor]:
        """Losses of a batch of (reference, caption, target) triplets."""
        # Without the decomposition there is no complementary branch, hence no KL term.
        branches = ('pos', 'neg') if self.degradation else ('pos', )
        query_pos, query_neg = self._queries(
            inputs['ref_img'], self._texts(data_samples), branches,
            image_keys=self._image_keys(data_samples, 'ref_img_path'))
        target = self.gallery_features(
            inputs['tgt_img'], image_keys=self._image_keys(data_samples, 'tgt_img_path'))
        return self.loss_module(query_pos, query_neg, target)

    # ------------------------------------------------------------------ features
    def query_features(self, ref_img: torch.Tensor, texts: Sequence[str],
                       image_keys: Optional[Sequence[str]] = None,
                       branch: str = 'pos') -> torch.Tensor:
        """L2-normalised composed queries; ``branch='pos'`` is q+ (retrieval), 'neg' is q-."""
        if branch not in ('pos', 'neg'):
            raise ValueError(f'branch must be "pos" or "neg", got {branch!r}')
        query_pos, query_neg = self._queries(ref_img, texts, branches=(branch, ),
                                             image_keys=image_keys)
        return query_pos if branch == 'pos' else query_neg

    def gallery_features(self, images: torch.Tensor,
                         image_keys: Optional[Sequence[str]] = None) -> torch.Tensor:
        """L2-normalised target / gallery features (docs/method.md, section 1.6)."""
        global_feat, tokens = self.clip.encode_image(images, image_keys)
        tokens = self.image_token_proj(tokens) + self.token_type_embeddings.weight[0]
        fused = self.fusion(tokens, None)
        # The sum in fp32: under autocast a bf16 sum would round away most of the 0.01 residual.
        residual = self.target_proj(fused[:, 0]).float()
        return F.normalize(RESIDUAL_SCALE * residual + global_feat.float(), dim=-1)

    def _queries(self, ref_img: torch.Tensor, texts: Sequence[str],
                 branches: Sequence[str] = ('pos', 'neg'),
                 image_keys: Optional[Sequence[str]] = None
                 ) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        if ref_img.shape[0] != len(texts):
            raise ValueError(f'{ref_img.shape[0]} reference images but {len(texts)} captions')
        img_global, img_tokens = self.clip.encode_image(ref_img, image_keys)
        return self._compose_queries(img_global, img_tokens, self.clip.encode_text(texts),
                                     branches)

    def query_features_from_tokens(self, ref_img: torch.Tensor, tokens: torch.Tensor
                                   ) -> torch.Tensor:
        """q+ from token ids [B, L] instead of captions (the exported query composer):
        0-padded tokens of :meth:`OpenCLIPBackbone.tokenize`, any L up to the context length;
        the padding mask comes from the tokens."""
        img_global, img_tokens = self.clip.encode_image(ref_img)
        encoded = self.clip.encode_tokens(tokens, self.clip.padding_mask(tokens))
        return self._compose_queries(img_global, img_tokens, encoded, ('pos', ))[0]

    def _compose_queries(self, img_global: torch.Tensor, img_tokens: torch.Tensor,
                         encoded_text: Tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                         branches: Sequence[str]
                         ) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        txt_global, txt_tokens, txt_mask = encoded_text
        img_tokens = self.image_token_proj(img_tokens)
        txt_tokens = self.text_token_proj(txt_tokens)
        prototype, img_rest, txt_pos, txt_neg = self._degrade(img_tokens, txt_tokens, txt_mask)

        outputs = []
        for branch, (img, txt) in (('pos', (prototype, txt_pos)), ('neg', (img_rest, txt_neg))):
            if branch not in branches:
                outputs.append(None)
                continue
            fused = self._fuse(img, txt, txt_mask)
            outputs.append(self._compose(fused, txt_mask, img.shape[1], img_global, txt_global))
        return outputs[0], outputs[1]

    def _degrade(self, img_tokens: torch.Tensor, txt_tokens: torch.Tensor,
                 txt_mask: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Split text into L+/L- and the image into the prototype I0 and its complement I-."""
        if not self.degradation:
            return img_tokens, torch.zeros_like(img_tokens), txt_tokens, torch.zeros_like(
                txt_tokens)
        img_cls = img_tokens[:, :1].expand(-1, txt_tokens.shape[1], -1)
        text_gate = torch.sigmoid(
            self.text_token_selection(torch.cat([txt_tokens, img_cls], dim=-1)))
        txt_pos = txt_tokens * text_gate
        txt_neg = txt_tokens * (1 - text_gate)
        degradation = masked_mean(txt_neg, txt_mask).unsqueeze(1).expand_as(img_tokens)
        image_gate = torch.sigmoid(
            self.image_token_selection(torch.cat([img_tokens, degradation], dim=-1)))
        return img_tokens * image_gate, img_tokens * (1 - image_gate), txt_pos, txt_neg

    def _fuse(self, img_tokens: torch.Tensor, txt_tokens: torch.Tensor,
              txt_mask: torch.Tensor) -> torch.Tensor:
        type_emb = self.token_type_embeddings.weight
        tokens = torch.cat([img_tokens + type_emb[0], txt_tokens + type_emb[1]], dim=1)
        padding = None
        if self.fusion_padding_mask:
            img_keep = txt_mask.new_ones(img_tokens.shape[:2])
            padding = ~torch.cat([img_keep, txt_mask], dim=1)
        return self.fusion(tokens, padding)

    def _compose(self, fused: torch.Tensor, txt_mask: torch.Tensor, num_img: int,
                 img_global: torch.Tensor, txt_global: torch.Tensor) -> torch.Tensor:
        """The composition head: q = norm(0.01 * out(h) + lambda * t + (1 - lambda) * v)."""
        text_summary = masked_mean(fused[:, num_img:], txt_mask)
        summary = torch.cat([text_summary, fused[:, 0]], dim=-1)
        residual = self.output_layer(self.combiner_layer(summary)).float()
        scalar = self.dynamic_scalar(summary).float()
        # In fp32 (see gallery_features): features leave the model in fp32 under autocast too.
        query = (RESIDUAL_SCALE * residual + scalar * txt_global.float()
                 + (1 - scalar) * img_global.float())
        return F.normalize(query, dim=-1)
