"""The CLIP backbone of SSN: the only module of ssn_plugin that imports open_clip.

open_clip's ``create_model`` has some twenty knobs; :class:`OpenCLIPBackbone` exposes the few SSN
needs (architecture, weights, which towers train) and returns exactly the tensors SSN consumes:

* image: the pooled, projected embedding ``v`` [B, D] and the token states ``V`` [B, N, C_v] of the
  last transformer block (class token first, *before* the final LayerNorm, as HuggingFace's
  ``last_hidden_state`` that the SSN release used);
* text: the pooled, projected embedding ``t`` [B, D], the token states ``T`` [B, L, C_t] after the
  final LayerNorm, and the padding mask [B, L] (True = a real token, BOS and EOS included).

Token counts and widths are read from the model, never hard-coded.
"""
import json
import os.path as osp
from typing import List, Optional, Sequence, Tuple, Union

import open_clip
import torch
from open_clip.transformer import VisionTransformer
from torch import nn

from ssn_plugin.registry import MODELS


def _load_arch_cfg(arch: Union[str, dict]) -> Optional[dict]:
    """Return an explicit architecture dict, or None for a name open_clip knows."""
    if isinstance(arch, dict):
        return dict(arch)
    if arch.endswith('.json'):
        if not osp.isfile(arch):
            raise FileNotFoundError(f'open_clip model config file not found: {arch}')
        with open(arch) as f:
            return json.load(f)
    if arch not in open_clip.list_models():
        raise ValueError(f'Unknown open_clip architecture {arch!r}: expected one of '
                         f'open_clip.list_models() (e.g. "ViT-B-32", "ViT-B-16", "ViT-L-14"), '
                         'a path to a model config .json file, or a config dict.')
    return None


@MODELS.register_module()
class OpenCLIPBackbone(nn.Module):
    """An open_clip ViT CLIP model that returns pooled embeddings and token states.

    Args:
        arch (str | dict): An open_clip architecture name (``'ViT-B-32'``, ``'ViT-B-16'``,
            ``'ViT-L-14'``, ...), a path to an open_clip model config ``.json`` file, or that
            config as a dict (``embed_dim``, ``vision_cfg``, ``text_cfg``). Defaults to
            ``'ViT-B-32'``.
        pretrained (str, optional): An open_clip pretrained tag (e.g. ``'openai'``, downloaded
            by open_clip on first use) or a local checkpoint file. None keeps the random
            initialisation. Defaults to None.
        train_vision (bool): Whether the vision tower is trainable. Defaults to True.
        train_text (bool): Whether the text tower is trainable. Defaults to True.
    """

    def __init__(self,
                 arch: Union[str, dict] = 'ViT-B-32',
                 pretrained: Optional[str] = None,
                 train_vision: bool = True,
                 train_text: bool = True):
        super().__init__()
        arch_cfg = _load_arch_cfg(arch)
        if arch_cfg is None:
            self.model = open_clip.create_model(arch, pretrained=pretrained)
            self.tokenizer = open_clip.get_tokenizer(arch)
        else:
            if arch_cfg.get('text_cfg', {}).get('hf_tokenizer_name'):
                raise NotImplementedError(
                    'OpenCLIPBackbone supports open_clip text towers with the built-in CLIP '
                    'tokenizer only; got a config with text_cfg.hf_tokenizer_name.')
            self.model = open_clip.CLIP(**arch_cfg)
            if pretrained is not None:
                if not osp.isfile(pretrained):
                    raise FileNotFoundError(
                        f'pretrained checkpoint not found: {pretrained} (a config-dict '
                        'architecture takes a local file, not an open_clip tag)')
                open_clip.load_checkpoint(self.model, pretrained)
            self.tokenizer = open_clip.SimpleTokenizer(
                context_length=self.model.context_length)

        if not isinstance(self.model.visual, VisionTransformer):
            raise NotImplementedError(
                f'OpenCLIPBackbone needs an open_clip VisionTransformer image tower; '
                f'{arch!r} has {type(self.model.visual).__name__}.')
        # CLIP (text tower inlined) or CustomTextCLIP (text tower in `.text`).
        self._text = getattr(self.model, 'text', self.model)
        for name in ('token_embedding', 'positional_embedding', 'transformer', 'ln_final'):
            if not hasattr(self._text, name):
                raise NotImplementedError(
                    f'OpenCLIPBackbone needs an open_clip transformer text tower; {arch!r} '
                    f'has none (missing {name!r}).')
        self._pool_type = getattr(self._text, 'text_pool_type',
                                  getattr(self._text, 'pool_type', 'argmax'))
        if self._pool_type not in ('argmax', 'eos'):
            raise NotImplementedError(
                f'text pool type {self._pool_type!r} is not supported (argmax or eos).')
        self.eot_token_id = self.tokenizer.eot_token_id
        self.context_length = self.model.context_length

        # CLIP's own temperature is not used by SSN (fixed logit scale), so it never trains.
        for name in ('logit_scale', 'logit_bias'):
            param = getattr(self.model, name, None)
            if isinstance(param, nn.Parameter):
                param.requires_grad_(False)
        self.set_trainable(vision=train_vision, text=train_text)

    # ------------------------------------------------------------------ shapes
    @property
    def embed_dim(self) -> int:
        """D: the width of the pooled, projected embeddings of both towers."""
        return self.model.visual.output_dim

    @property
    def vision_width(self) -> int:
        """C_v: the width of the image token states."""
        return self.model.visual.transformer.width

    @property
    def text_width(self) -> int:
        """C_t: the width of the text token states."""
        return self._text.transformer.width

    @property
    def num_image_tokens(self) -> int:
        """N: class token + patches at the model's input resolution."""
        grid = self.model.visual.grid_size
        return 1 + grid[0] * grid[1]

    @property
    def image_size(self) -> Tuple[int, int]:
        size = self.model.visual.image_size
        return (size, size) if isinstance(size, int) else tuple(size)

    def vision_parameters(self) -> List[nn.Parameter]:
        return list(self.model.visual.parameters())

    def text_parameters(self) -> List[nn.Parameter]:
        visual = {id(p) for p in self.model.visual.parameters()}
        frozen = {id(getattr(self.model, n)) for n in ('logit_scale', 'logit_bias')
                  if isinstance(getattr(self.model, n, None), nn.Parameter)}
        return [p for p in self.model.parameters() if id(p) not in visual | frozen]

    def set_trainable(self, vision: Optional[bool] = None, text: Optional[bool] = None) -> None:
        """Freeze or unfreeze a tower; None leaves it as it is."""
        if vision is not None:
            for p in self.vision_parameters():
                p.requires_grad_(vision)
        if text is not None:
            for p in self.text_parameters():
                p.requires_grad_(text)

    # ------------------------------------------------------------------ encoders
    def tokenize(self, texts: Sequence[str], device=None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Tokenize, truncating at the context length, and trim to the longest caption.

        Returns:
            tuple: token ids [B, L] and the padding mask [B, L] (True = BOS, words, EOS).
        """
        tokens = self.tokenizer(list(texts))
        # The first EOT closes a caption (the tokenizer keeps an EOT when it truncates).
        eot_pos = (tokens == self.eot_token_id).int().argmax(dim=1)
        length = int(eot_pos.max()) + 1
        tokens = tokens[:, :length]
        mask = torch.arange(length).unsqueeze(0) <= eot_pos.unsqueeze(1)
        return tokens.to(device), mask.to(device)

    def encode_text(self, texts: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor,
                                                         torch.Tensor]:
        """Encode captions.

        Returns:
            tuple: ``t`` [B, D], ``T`` [B, L, C_t] (after the final LayerNorm), mask [B, L].
        """
        text = self._text
        tokens, mask = self.tokenize(texts, device=text.token_embedding.weight.device)
        length = tokens.shape[1]
        x = text.token_embedding(tokens) + text.positional_embedding[:length]
        attn_mask = text.attn_mask
        if attn_mask is not None:
            # Causal: a real token never sees the padding, so trimming changes nothing.
            attn_mask = attn_mask[:length, :length].to(x.dtype)
        x = text.transformer(x, attn_mask=attn_mask)
        states = text.ln_final(x)
        eot_pos = mask.sum(dim=1) - 1
        pooled = states[torch.arange(states.shape[0], device=states.device), eot_pos]
        proj = text.text_projection
        if proj is not None:
            pooled = proj(pooled) if isinstance(proj, nn.Linear) else pooled @ proj
        return pooled, states, mask

    def encode_image(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Encode normalised images [B, 3, H, W].

        Returns:
            tuple: ``v`` [B, D] and ``V`` [B, N, C_v] (class token first, before ``ln_post``).
        """
        out = self.model.visual.forward_intermediates(
            images, indices=1, output_fmt='NLC', output_extra_tokens=True)
        tokens = torch.cat(
            [out['image_intermediates_prefix'][-1], out['image_intermediates'][-1]], dim=1)
        return out['image_features'], tokens
