"""The CLIP backbone of SSN: the only module of ssn_plugin that imports open_clip.

open_clip's ``create_model`` has some twenty knobs; :class:`OpenCLIPBackbone` exposes the few SSN
needs (architecture, weights, which towers train) and returns exactly the tensors SSN consumes:

* image: the pooled, projected embedding ``v`` [B, D] and the token states ``V`` [B, N, C_v] of the
  last transformer block (class token first, *before* the final LayerNorm, as HuggingFace's
  ``last_hidden_state`` that the SSN release used);
* text: the pooled, projected embedding ``t`` [B, D], the token states ``T`` [B, L, C_t] after the
  final LayerNorm, and the padding mask [B, L] (True = a real token, BOS and EOS included).

Token counts, widths, the input resolution and the normalisation are read from the model and its
weights, never hard-coded. The activation is the one the weights were trained with: OpenAI's
and LAION-400M's CLIPs use QuickGELU, and loading them into open_clip's default GELU model gives
wrong features with only a warning (see :func:`resolve_weights`).
"""
import copy
import json
import os.path as osp
import zipfile
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import open_clip
import open_clip.pretrained as oc_pretrained
import torch
from open_clip.transformer import VisionTransformer
from torch import nn

from ssn_plugin.registry import MODELS
from .feature_cache import ImageFeatureCache

# open_clip's defaults (OpenAI's statistics), used when neither the weights' tag nor the
# architecture config says otherwise.
DEFAULT_PREPROCESS = dict(mean=tuple(open_clip.OPENAI_DATASET_MEAN),
                          std=tuple(open_clip.OPENAI_DATASET_STD),
                          interpolation='bicubic', resize_mode='shortest')


def load_arch_cfg(arch: Union[str, dict]) -> dict:
    """The architecture config dict of a name open_clip knows, a ``.json`` file or a dict."""
    if isinstance(arch, dict):
        return copy.deepcopy(arch)
    if arch.endswith('.json'):
        if not osp.isfile(arch):
            raise FileNotFoundError(f'open_clip model config file not found: {arch}')
        with open(arch) as f:
            cfg = json.load(f)
        return cfg.get('model_cfg', cfg)
    if arch not in open_clip.list_models():
        raise ValueError(f'Unknown open_clip architecture {arch!r}: expected one of '
                         f'open_clip.list_models() (e.g. "ViT-B-32", "ViT-B-16", "ViT-L-14"), '
                         'a path to a model config .json file, or a config dict.')
    return copy.deepcopy(open_clip.get_model_config(arch))


def is_torchscript_file(path: str) -> bool:
    """Whether ``path`` is a TorchScript archive: the format of OpenAI's original CLIP files."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith('/constants.pkl') for name in archive.namelist())


def _quick_gelu_file_names() -> set:
    """File names under which open_clip downloads weights that were trained with QuickGELU."""
    names = set()
    for arch, tag in open_clip.list_pretrained(as_str=False):
        cfg = open_clip.get_pretrained_cfg(arch, tag)
        if cfg.get('quick_gelu') and cfg.get('url'):
            names.add(osp.basename(cfg['url']))
    return names


class WeightsSpec(NamedTuple):
    """What :func:`resolve_weights` decided: where the weights come from and how to build for them.

    ``source`` is ``'none'`` (random initialisation), ``'tag'`` (an open_clip pretrained tag,
    ``tag_cfg`` set) or ``'file'`` (a local checkpoint). ``preprocess`` holds the
    normalisation (``mean``, ``std``) and resize settings the weights were trained with.
    """
    source: str
    quick_gelu: bool
    preprocess: dict
    tag_cfg: Optional[dict] = None


def resolve_weights(arch: Union[str, dict], arch_cfg: dict, pretrained: Optional[str],
                    quick_gelu: Optional[bool] = None) -> WeightsSpec:
    """Decide the activation and preprocessing that the chosen weights need.

    * an open_clip tag of a named architecture: from open_clip's pretrained config of the tag
      (``openai`` and ``laion400m_*`` need QuickGELU, ``laion2b_*`` GELU); an explicit
      ``quick_gelu`` that contradicts it is an error;
    * a local file or no weights: from ``quick_gelu`` when given, else from the architecture
      config (``ViT-B-32-quickgelu`` sets it). Whether a file fits is checked when it is loaded
      (:meth:`OpenCLIPBackbone._check_file_activation`).

    Nothing is downloaded or read here.
    """
    preprocess = dict(DEFAULT_PREPROCESS, **{
        k: v for k, v in arch_cfg.get('preprocess_cfg', {}).items() if k in DEFAULT_PREPROCESS})
    arch_quick_gelu = bool(arch_cfg.get('quick_gelu', False))
    if pretrained is None:
        return WeightsSpec('none', arch_quick_gelu if quick_gelu is None else quick_gelu,
                           preprocess)
    tag_cfg = (oc_pretrained.get_pretrained_cfg(arch, pretrained)
               if isinstance(arch, str) and not arch.endswith('.json') else {})
    if not tag_cfg:
        return WeightsSpec('file', arch_quick_gelu if quick_gelu is None else quick_gelu,
                           preprocess)
    tag_quick_gelu = bool(tag_cfg.get('quick_gelu', False))
    if quick_gelu is not None and quick_gelu != tag_quick_gelu:
        raise ValueError(
            f'{arch} weights {pretrained!r} were trained with '
            f'{"QuickGELU" if tag_quick_gelu else "GELU"}, but quick_gelu={quick_gelu} was '
            'given; remove quick_gelu from the backbone config (it is read from the tag).')
    preprocess.update({k: tag_cfg[k] for k in DEFAULT_PREPROCESS if k in tag_cfg})
    return WeightsSpec('tag', tag_quick_gelu, preprocess, tag_cfg)


def _build_clip(arch_cfg: dict, quick_gelu: bool) -> nn.Module:
    cfg = dict(arch_cfg, quick_gelu=quick_gelu)
    cfg.pop('preprocess_cfg', None)
    if cfg.get('text_cfg', {}).get('hf_tokenizer_name') or cfg.get('text_cfg', {}).get(
            'hf_model_name'):
        raise NotImplementedError(
            'OpenCLIPBackbone supports open_clip text towers with the built-in CLIP '
            'tokenizer only; got a config with a HuggingFace text tower or tokenizer.')
    if cfg.pop('custom_text', False):
        return open_clip.CustomTextCLIP(**cfg)
    return open_clip.CLIP(**cfg)


def skip_pretrained_weights(model_cfg) -> int:
    """Set ``load_pretrained=False`` on every :class:`OpenCLIPBackbone` in a model config.

    Used when a full checkpoint will be loaded anyway (``tools/test.py``, ``tools/retrieve.py``,
    :class:`~ssn_plugin.apis.CIRRetriever`): the architecture, activation and preprocessing are
    still derived from ``pretrained``, but nothing is downloaded or read.

    Returns:
        int: how many backbone configs were changed.
    """
    count = 0
    if isinstance(model_cfg, dict):
        if model_cfg.get('type') in ('OpenCLIPBackbone', OpenCLIPBackbone):
            model_cfg['load_pretrained'] = False
            count += 1
        for value in model_cfg.values():
            count += skip_pretrained_weights(value)
    elif isinstance(model_cfg, (list, tuple)):
        count += sum(skip_pretrained_weights(value) for value in model_cfg)
    return count


@MODELS.register_module()
class OpenCLIPBackbone(nn.Module):
    """An open_clip ViT CLIP model that returns pooled embeddings and token states.

    Args:
        arch (str | dict): An open_clip architecture name (``'ViT-B-32'``, ``'ViT-B-16'``,
            ``'ViT-L-14'``, ``'ViT-B-32-quickgelu'``, ...), a path to an open_clip model config
            ``.json`` file, or that config as a dict (``embed_dim``, ``vision_cfg``,
            ``text_cfg``, optionally ``quick_gelu`` and ``preprocess_cfg``). Defaults to
            ``'ViT-B-32'``.
        pretrained (str, optional): An open_clip pretrained tag of ``arch`` (e.g. ``'openai'``,
            ``'laion2b_s34b_b79k'``; downloaded by open_clip on first use) or a local checkpoint
            file (open_clip format, or OpenAI's original TorchScript file). None keeps the random
            initialisation. Defaults to None.
        quick_gelu (bool, optional): Build with QuickGELU. None derives it: from the tag for an
            open_clip tag, else from the architecture config. Needed for a local file of
            QuickGELU weights in a plain architecture (or use the ``-quickgelu`` architecture).
            Defaults to None.
        load_pretrained (bool): Read the ``pretrained`` weights. False builds the same
            architecture, activation and preprocessing without downloading or reading anything
            (a full checkpoint will be loaded instead). Defaults to True.
        train_vision (bool): Whether the vision tower is trainable. Defaults to True.
        train_text (bool): Whether the text tower is trainable. Defaults to True.
        grad_checkpointing (bool): Recompute each transformer block's activations in the
            backward pass instead of keeping them (open_clip's gradient checkpointing): about
            one more forward pass of compute for a fraction of the activation memory; for
            ViT-H/14 and larger batches. Defaults to False.
        feature_cache (bool | str): While the image tower is frozen, keep each image's outputs
            (:class:`~ssn_plugin.models.feature_cache.ImageFeatureCache`, fp16) and reuse them
            for every later step and evaluation that passes the image's key: True keeps them
            on the device that computed them, ``'cpu'`` in host memory. Cleared when the tower
            is unfrozen or weights are loaded. Needs a deterministic image pipeline (no random
            augmentation). Defaults to False.
    """

    def __init__(self,
                 arch: Union[str, dict] = 'ViT-B-32',
                 pretrained: Optional[str] = None,
                 quick_gelu: Optional[bool] = None,
                 load_pretrained: bool = True,
                 train_vision: bool = True,
                 train_text: bool = True,
                 grad_checkpointing: bool = False,
                 feature_cache: Union[bool, str] = False):
        super().__init__()
        arch_cfg = load_arch_cfg(arch)
        self.weights = resolve_weights(arch, arch_cfg, pretrained, quick_gelu)
        self.model = _build_clip(arch_cfg, self.weights.quick_gelu)
        if load_pretrained and self.weights.source != 'none':
            self._load_weights(arch, pretrained)
        if isinstance(arch, str) and not arch.endswith('.json'):
            self.tokenizer = open_clip.get_tokenizer(arch)
        else:
            self.tokenizer = open_clip.SimpleTokenizer(context_length=self.model.context_length)

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
        self.grad_checkpointing = grad_checkpointing
        self.model.set_grad_checkpointing(grad_checkpointing)
        if feature_cache not in (False, True, 'cpu', None):
            raise ValueError(f"feature_cache must be False, True or 'cpu', got {feature_cache!r}")
        self.feature_cache = (ImageFeatureCache(device='cpu' if feature_cache == 'cpu' else None)
                              if feature_cache else None)
        # Loading weights (a checkpoint, a resume) invalidates cached features.
        self._register_load_state_dict_pre_hook(self._clear_feature_cache)

    # ------------------------------------------------------------------ weights
    def _load_weights(self, arch: Union[str, dict], pretrained: str) -> None:
        if self.weights.source == 'tag':
            try:
                path = oc_pretrained.download_pretrained(self.weights.tag_cfg)
            except Exception as err:  # network, hub or cache errors: say what to do offline
                raise RuntimeError(
                    f'open_clip could not fetch the {arch} weights {pretrained!r}: {err}. '
                    'Offline, pass the downloaded file as `pretrained` (with quick_gelu=True '
                    'for QuickGELU weights); to evaluate a trained checkpoint no CLIP weights '
                    'are needed (tools/test.py and the retriever skip them).') from err
            if not path:
                raise RuntimeError(f'open_clip could not fetch the {arch} weights {pretrained!r}')
        else:
            path = pretrained
            if not osp.isfile(path):
                tags = (oc_pretrained.list_pretrained_tags_by_model(arch)
                        if isinstance(arch, str) else [])
                raise FileNotFoundError(
                    f'pretrained checkpoint not found: {path} (expected a local file'
                    + (f' or one of the open_clip tags of {arch}: {", ".join(tags)})'
                       if tags else ')'))
            self._check_file_activation(path)
        if is_torchscript_file(path):
            # OpenAI's original distribution: a TorchScript archive with the same state keys.
            # Its buffers include a few that are not weights; everything else must match.
            state = torch.jit.load(path, map_location='cpu').state_dict()
            for key in ('input_resolution', 'context_length', 'vocab_size', 'attn_mask'):
                state.pop(key, None)
            self.model.load_state_dict({k: v.float() for k, v in state.items()})
        else:
            open_clip.load_checkpoint(self.model, path)

    def _check_file_activation(self, path: str) -> None:
        """Refuse a file of QuickGELU weights (OpenAI's format or open_clip's download name)
        going into a GELU model: open_clip would load it and only warn."""
        if self.weights.quick_gelu:
            return
        reason = None
        if is_torchscript_file(path):
            reason = "is OpenAI's TorchScript format"
        elif osp.basename(path) in _quick_gelu_file_names():
            reason = 'has the name of an open_clip download of QuickGELU weights'
        if reason:
            raise ValueError(
                f'{path} {reason}: those weights were trained with QuickGELU, but the model is '
                'built with GELU, which gives wrong features. Use the "-quickgelu" architecture '
                '(e.g. arch="ViT-B-32-quickgelu") or pass quick_gelu=True to the backbone.')

    @property
    def preprocess_cfg(self) -> dict:
        """The input the weights expect: ``size`` (H, W), ``mean``, ``std`` (0-1 scale),
        ``interpolation`` and ``resize_mode``."""
        return dict(self.weights.preprocess, size=self.image_size)

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
        """(H, W): the input resolution the image tower is built for."""
        size = self.model.visual.image_size
        return (size, size) if isinstance(size, int) else tuple(size)

    def vision_parameters(self) -> List[nn.Parameter]:
        return list(self.model.visual.parameters())

    def text_parameters(self) -> List[nn.Parameter]:
        visual = {id(p) for p in self.model.visual.parameters()}
        frozen = {id(getattr(self.model, n)) for n in ('logit_scale', 'logit_bias')
                  if isinstance(getattr(self.model, n, None), nn.Parameter)}
        return [p for p in self.model.parameters() if id(p) not in visual | frozen]

    @property
    def vision_frozen(self) -> bool:
        """Whether no parameter of the image tower trains."""
        return not any(p.requires_grad for p in self.model.visual.parameters())

    def _clear_feature_cache(self, *args, **kwargs) -> None:
        cache = getattr(self, 'feature_cache', None)  # None too while __init__ runs
        if cache is not None:
            cache.clear()

    def set_trainable(self, vision: Optional[bool] = None, text: Optional[bool] = None) -> None:
        """Freeze or unfreeze a tower; None leaves it as it is. Unfreezing the image tower
        empties the feature cache (its weights will change)."""
        if vision:
            self._clear_feature_cache()
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
        tokens = tokens[:, :int(eot_pos.max()) + 1]
        return tokens.to(device), self.padding_mask(tokens).to(device)

    def tokenizer_spec(self) -> dict:
        """What a tokenizer outside torch needs to tokenize as :meth:`tokenize` does (the ONNX
        export's ``ClipTokenizer``): open_clip's BPE merges file, the cleaning, the special
        tokens and the context length.

        Raises:
            NotImplementedError: the tokenizer is not open_clip's plain ``SimpleTokenizer``
                (a reduction mask, or another tokenizer class).
        """
        tokenizer = self.tokenizer
        clean = {'_clean_lower': 'lower', '_clean_whitespace': 'whitespace',
                 '_clean_canonicalize': 'canonicalize'}.get(
                     getattr(getattr(tokenizer, 'clean_fn', None), '__name__', None))
        if not isinstance(tokenizer, open_clip.SimpleTokenizer) or clean is None or \
                getattr(tokenizer, 'reduction_fn', None) is not None:
            raise NotImplementedError(
                f'the export carries open_clip\'s SimpleTokenizer only (no reduction mask); '
                f'this backbone tokenizes with {type(tokenizer).__name__}')
        return dict(merges_file=open_clip.tokenizer.default_bpe(), clean=clean,
                    special_tokens=[tokenizer.decoder[i] for i in tokenizer.all_special_ids],
                    context_length=int(tokenizer.context_length))

    def encode_text(self, texts: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor,
                                                         torch.Tensor]:
        """Encode captions.

        Returns:
            tuple: ``t`` [B, D], ``T`` [B, L, C_t] (after the final LayerNorm), mask [B, L].
        """
        tokens, mask = self.tokenize(texts, device=self._text.token_embedding.weight.device)
        return self.encode_tokens(tokens, mask)

    def padding_mask(self, tokens: torch.Tensor) -> torch.Tensor:
        """The mask of :meth:`tokenize` from the token ids alone: True up to and including the
        first EOT of each row (what an exported graph derives from 0-padded tokens)."""
        eot_pos = (tokens == self.eot_token_id).int().argmax(dim=1)
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        return positions.unsqueeze(0) <= eot_pos.unsqueeze(1)

    def encode_tokens(self, tokens: torch.Tensor, mask: torch.Tensor
                      ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode token ids [B, L] (from :meth:`tokenize`, or 0-padded to any L up to the
        context length) with their padding mask; returns what :meth:`encode_text` returns."""
        text = self._text
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

    def encode_image(self, images: torch.Tensor,
                     keys: Optional[Sequence[str]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Encode normalised images [B, 3, H, W].

        Args:
            images (Tensor): The batch.
            keys (Sequence[str], optional): One key per image (its file path); with
                ``feature_cache`` on and the image tower frozen, cached outputs are reused.
                Defaults to None (always computed).

        Returns:
            tuple: ``v`` [B, D] and ``V`` [B, N, C_v] (class token first, before ``ln_post``).
        """
        if self.feature_cache is not None and keys is not None and self.vision_frozen:
            return self.feature_cache.encode(images, list(keys), self._encode_image)
        return self._encode_image(images)

    def _encode_image(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if tuple(images.shape[-2:]) != self.image_size:
            raise ValueError(
                f'images are {tuple(images.shape[-2:])} pixels but the image tower takes '
                f'{self.image_size}; leave `size` unset in CLIPResizeCrop to use the model\'s '
                'input size')
        out = self.model.visual.forward_intermediates(
            images, indices=1, output_fmt='NLC', output_extra_tokens=True)
        tokens = torch.cat(
            [out['image_intermediates_prefix'][-1], out['image_intermediates'][-1]], dim=1)
        return out['image_features'], tokens
