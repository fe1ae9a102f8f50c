"""ONNX export of a trained model's two serving graphs, checked against PyTorch.

``gallery_encoder.onnx``: ``image`` float32 [N, 3, H, W] (normalised as the data preprocessor
does) -> ``feature`` [N, D], equal to ``model.gallery_features``.
``query_composer.onnx``: ``image`` (the same) and ``text_tokens`` int64 [N, L] (the 0-padded ids
of ``OpenCLIPBackbone.tokenize``, any L up to the context length) -> ``query`` [N, D], equal to
``model.query_features`` (SSN's q+ branch); the padding mask is derived from the tokens inside
the graph. ``export.json`` says what a serving process needs to feed them, and the BPE merges
file of the tokenizer is copied next to them, so that serving needs neither torch nor open_clip
(:class:`~ssn_plugin.apis.clip_tokenizer.ClipTokenizer`).
"""
import json
import os
import os.path as osp
import shutil
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssn_plugin.version import __version__
from .clip_tokenizer import ClipTokenizer, file_sha256
from .onnx_retriever import import_onnxruntime
from .retriever import weights_digest

#: The largest difference from PyTorch an exported graph may show on the check inputs.
EXPORT_TOLERANCE = 1e-4
CHECK_TEXTS = ('make it red', 'remove the dog and add two cats on the left, bigger', 'x')
#: Captions the shipped tokenizer must tokenize exactly as the model's: entities, accents,
#: mojibake, scripts without spaces, emoji, digits, contractions, specials, one too long.
TOKENIZER_CHECK_TEXTS = CHECK_TEXTS + (
    'Make it RED &amp; remove the dog!!', '  naïve café — 12,345 Ünïcödé ', 'Ã©tÃ© mojibake',
    '中文字符 and emoji 🐶🐱', "don't, it's, we'll", '<end_of_text> inside', '', 'word ' * 100)


class GalleryEncoder(nn.Module):
    """``model.gallery_features`` as a module with one tensor input."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.gallery_features(image)


class QueryComposer(nn.Module):
    """``model.query_features_from_tokens``: reference image + token ids -> the query."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, text_tokens: torch.Tensor) -> torch.Tensor:
        # Padded to the context length inside the graph: the traced text tower then sees one
        # length (the exporter would fix the tracing length into its reshapes); the causal
        # attention and the padding mask make the padding change nothing.
        context = self.model.clip.context_length
        tokens = F.pad(text_tokens, (0, context - text_tokens.shape[1]))
        return self.model.query_features_from_tokens(image, tokens)


def checked_tokenizer(model: nn.Module) -> Tuple[dict, ClipTokenizer]:
    """The model's tokenizer as the export ships it, checked to give the model's ids.

    Raises:
        RuntimeError: the shipped tokenizer would tokenize differently (vocabulary or ids).
    """
    spec = model.clip.tokenizer_spec()
    tokenizer = ClipTokenizer(spec['merges_file'], spec['context_length'], spec['clean'],
                              spec['special_tokens'])
    texts = list(TOKENIZER_CHECK_TEXTS)
    expected = model.clip.tokenizer(texts).numpy()
    if tokenizer.encoder != model.clip.tokenizer.encoder or \
            not np.array_equal(tokenizer(texts), expected):
        raise RuntimeError(f'the tokenizer built from {spec["merges_file"]} gives other ids '
                           'than the model\'s; an export with it would not be served as the '
                           'model answers (not written)')
    return spec, tokenizer


def check_tokens(tokenizer: ClipTokenizer, texts: Sequence[str]) -> torch.Tensor:
    """0-padded token ids of ``texts`` as a serving process feeds them (the shipped tokenizer,
    checked equal to the model's, trimmed to the longest caption)."""
    return torch.from_numpy(tokenizer.trimmed(list(texts)))


def export_onnx(model: nn.Module, out_dir: str, checkpoint: Optional[str] = None,
                opset: int = 17, tolerance: float = EXPORT_TOLERANCE) -> Dict[str, str]:
    """Export the gallery encoder and the query composer of ``model`` to ``out_dir``.

    The model runs in eval mode on the CPU. Each graph is checked with ONNX Runtime on inputs
    other than the tracing ones (batch 1 and 3, captions of different lengths in one batch);
    a graph that differs from PyTorch by more than ``tolerance`` is not written
    (``RuntimeError`` with the difference).

    Args:
        model (nn.Module): An ``SSN`` or ``CLIPBaseline`` (anything with ``gallery_features``,
            ``query_features_from_tokens``, ``clip`` and ``data_preprocessor``).
        out_dir (str): Where ``gallery_encoder.onnx``, ``query_composer.onnx`` and
            ``export.json`` go.
        checkpoint (str, optional): The checkpoint the weights came from; its SHA-256 goes
            into ``export.json``. Defaults to None.
        opset (int): ONNX opset. Defaults to 17.
        tolerance (float): The largest absolute difference allowed. Defaults to 1e-4.

    Returns:
        dict: name -> path of the written files.
    """
    ort = import_onnxruntime()

    model = model.cpu().eval()
    token_spec, tokenizer = checked_tokenizer(model)
    height, width = model.image_size
    generator = torch.Generator().manual_seed(0)
    trace_image = torch.randn(2, 3, height, width, generator=generator)
    trace_tokens = check_tokens(tokenizer, CHECK_TEXTS[:2])
    graphs = {
        'gallery_encoder': (GalleryEncoder(model), (trace_image, ), ['image'], ['feature'],
                            {'image': {0: 'N'}, 'feature': {0: 'N'}}),
        'query_composer': (QueryComposer(model), (trace_image, trace_tokens),
                           ['image', 'text_tokens'], ['query'],
                           {'image': {0: 'N'}, 'text_tokens': {0: 'N', 1: 'L'},
                            'query': {0: 'N'}}),
    }
    # Wrappers in eval mode: the exporter restores each one's mode when done, recursively, so
    # a wrapper left in training mode would switch the model's dropout back on.
    for module, *_ in graphs.values():
        module.eval()
    os.makedirs(out_dir, exist_ok=True)
    written, differences = {}, {}
    for name, (module, args, inputs, outputs, axes) in graphs.items():
        path = osp.join(out_dir, f'{name}.onnx')
        tmp = path + '.tmp'
        # With gradients on: in no_grad eval mode nn.MultiheadAttention takes its fused
        # kernel, which the exporter cannot translate.
        extra = dict(dynamo=False) if _has_dynamo_flag() else {}
        torch.onnx.export(module, args, tmp, input_names=inputs, output_names=outputs,
                          dynamic_axes=axes, opset_version=opset, do_constant_folding=True,
                          **extra)
        session = ort.InferenceSession(tmp, providers=['CPUExecutionProvider'])
        worst = 0.0
        for batch in (1, 3):
            image = torch.randn(batch, 3, height, width, generator=generator)
            feed = {'image': image}
            if name == 'query_composer':
                # Different lengths in one batch; the batch of 1 is 0-padded past its caption.
                texts = CHECK_TEXTS if batch == 3 else CHECK_TEXTS[2:]
                tokens = check_tokens(tokenizer, texts)
                if batch == 1:
                    tokens = torch.cat([tokens, tokens.new_zeros(1, 5)], dim=1)
                feed['text_tokens'] = tokens
            with torch.no_grad():
                expected = module(*feed.values())
            got = session.run(None, {k: v.numpy() for k, v in feed.items()})[0]
            worst = max(worst, float((torch.from_numpy(got) - expected).abs().max()))
        differences[name] = worst
        if worst > tolerance:
            os.remove(tmp)
            raise RuntimeError(f'the exported {name} differs from PyTorch by {worst:.3g} (more '
                               f'than {tolerance:g}); not written')
        os.replace(tmp, path)
        written[name] = path
    merges_name = osp.basename(token_spec['merges_file'])
    merges_path = osp.join(out_dir, merges_name)
    shutil.copyfile(token_spec['merges_file'], merges_path + '.tmp')
    os.replace(merges_path + '.tmp', merges_path)
    written['tokenizer'] = merges_path
    meta = dict(
        model=type(model).__name__, project_version=__version__, opset=opset,
        image_size=[height, width], feature_dim=int(expected.shape[-1]),
        # The graphs take (pixel - mean) / std of RGB pixels in 0..255 after the config's
        # resize and crop, as CIRDataPreprocessor computes it.
        pixel_mean=[float(v) for v in model.data_preprocessor.mean.flatten()],
        pixel_std=[float(v) for v in model.data_preprocessor.std.flatten()],
        # ClipTokenizer(merges_file, context_length, clean, special_tokens) tokenizes as the
        # model's open_clip.SimpleTokenizer (checked above).
        tokenizer=dict(type='ClipTokenizer', merges_file=merges_name,
                       merges_sha256=file_sha256(merges_path), clean=token_spec['clean'],
                       special_tokens=token_spec['special_tokens'],
                       context_length=token_spec['context_length'],
                       sot_token_id=tokenizer.sot_token_id),
        context_length=int(model.clip.context_length),
        eot_token_id=int(model.clip.eot_token_id),
        max_abs_difference=differences,
        # CIRRetriever.model_digest of the same weights: indexes and pages name the model alike.
        weights_sha256=weights_digest(model),
        checkpoint=None if checkpoint is None else dict(path=osp.basename(checkpoint),
                                                        sha256=file_sha256(checkpoint)))
    meta_path = osp.join(out_dir, 'export.json')
    with open(meta_path, 'w') as f:
        json.dump(meta, f, indent=2)
    written['meta'] = meta_path
    return written


def _has_dynamo_flag() -> bool:
    """torch >= 2.5 has ``dynamo=``; the TorchScript exporter is the one used either way."""
    import inspect
    return 'dynamo' in inspect.signature(torch.onnx.export).parameters
