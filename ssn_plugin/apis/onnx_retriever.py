"""Composed retrieval served from an ONNX export (tools/export_onnx.py) with ONNX Runtime,
numpy and Pillow (and regex and ftfy for the tokenizer): torch, open_clip, mmengine and
mmpretrain are never imported, so a serving install can leave them out (tested with their
imports blocked).

The images are prepared as the PyTorch path prepares them (decoded by the project's image
loader, resized on the shorter side with bicubic and center-cropped as ``CLIPResizeCrop``,
normalised as ``CIRDataPreprocessor``), the captions tokenized by the export's
:class:`~ssn_plugin.apis.clip_tokenizer.ClipTokenizer` (open_clip's ids, checked at export), so
the rankings equal :class:`~ssn_plugin.apis.CIRRetriever`'s (tested).
"""
import json
import os.path as osp
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from ssn_plugin.image_io import as_rgb_image, read_image
from ssn_plugin.index import GalleryIndex
from .clip_tokenizer import ClipTokenizer, file_sha256
from .gallery import (IndexedGallery, check_queries, gallery_files, unique_files,
                      unreadable_gallery)


def import_onnxruntime():
    """onnxruntime, or an error saying which install provides it."""
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError('ONNX export and serving need the export extra: '
                          'pip install -e ".[export]" (onnx, onnxruntime)') from err
    return onnxruntime


def export_tokenizer(export_dir: str, meta: dict) -> ClipTokenizer:
    """The tokenizer an export ships (``export.json``'s ``tokenizer``), its merges file
    checked against the digest recorded at export."""
    spec = meta.get('tokenizer')
    where = osp.join(export_dir, 'export.json')
    if not isinstance(spec, dict) or spec.get('type') != 'ClipTokenizer':
        raise ValueError(f'{where}: "tokenizer" does not describe a ClipTokenizer (an export '
                         'of an older version?); export the checkpoint again with '
                         'tools/export_onnx.py')
    path = osp.join(export_dir, spec['merges_file'])
    if not osp.isfile(path) or file_sha256(path) != spec['merges_sha256']:
        raise ValueError(f'{path}: the tokenizer\'s merges file is missing or not the one '
                         f'exported (sha256 {spec["merges_sha256"]}); copy the export folder '
                         'whole')
    return ClipTokenizer(path, spec['context_length'], spec['clean'], spec['special_tokens'])


def resize_crop(image: Image.Image, height: int, width: int) -> Image.Image:
    """``CLIPResizeCrop``: the shorter side to max(H, W) (bicubic), then the centre H x W."""
    side = max(height, width)
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = side, int(side * long / short)
    size = (new_short, new_long) if w <= h else (new_long, new_short)
    if size != image.size:
        image = image.resize(size, Image.BICUBIC)
    w, h = image.size
    top, left = int(round((h - height) / 2.0)), int(round((w - width) / 2.0))
    return image.crop((left, top, left + width, top + height))


class OnnxRetriever(IndexedGallery):
    """Index a gallery and answer composed queries with the two exported graphs.

    Args:
        export_dir (str): What ``tools/export_onnx.py`` wrote (the two ``.onnx`` files and
            ``export.json``).
        providers (Sequence[str]): ONNX Runtime execution providers. Defaults to the CPU one.
        batch_size (int): Images per run when indexing. Defaults to 32.

    Examples:
        >>> from ssn_plugin.apis.onnx_retriever import OnnxRetriever
        >>> retriever = OnnxRetriever('exported/')  # doctest: +SKIP
        >>> retriever.index(['a.png', 'b.png', 'c.png'])  # doctest: +SKIP
        >>> retriever.query('a.png', 'make it red', topk=2)  # doctest: +SKIP
        [('c.png', 0.83), ('b.png', 0.41)]
    """

    def __init__(self, export_dir: str, providers: Sequence[str] = ('CPUExecutionProvider', ),
                 batch_size: int = 32):
        ort = import_onnxruntime()
        self.meta_path = osp.join(export_dir, 'export.json')
        with open(self.meta_path) as f:
            self.meta = json.load(f)
        self.height, self.width = self.meta['image_size']
        self.mean = np.asarray(self.meta['pixel_mean'], np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(self.meta['pixel_std'], np.float32).reshape(1, 3, 1, 1)
        self.tokenizer = export_tokenizer(export_dir, self.meta)
        self.gallery_encoder = ort.InferenceSession(
            osp.join(export_dir, 'gallery_encoder.onnx'), providers=list(providers))
        self.composer = ort.InferenceSession(osp.join(export_dir, 'query_composer.onnx'),
                                             providers=list(providers))
        self.batch_size = batch_size
        self.gallery: Optional[GalleryIndex] = None
        self.skipped: dict = {}  # unreadable gallery files left out by index(), path -> why

    def pixels(self, images: Sequence[Union[str, Image.Image]]) -> np.ndarray:
        """Normalised float32 [N, 3, H, W] of image files or PIL images."""
        arrays = []
        for image in images:
            image = read_image(image) if isinstance(image, str) else as_rgb_image(image)
            image = resize_crop(image, self.height, self.width)
            arrays.append(np.asarray(image, np.float32).transpose(2, 0, 1))
        return (np.stack(arrays) - self.mean) / self.std

    def tokens(self, texts: Sequence[str]) -> np.ndarray:
        """int64 token ids [N, L] (0-padded), trimmed to the longest caption."""
        return self.tokenizer.trimmed(list(texts))

    @property
    def model_digest(self) -> str:
        """The weights' digest, as :attr:`CIRRetriever.model_digest` gives it."""
        return self.meta['weights_sha256']

    def index(self, images: Union[str, Sequence[str]], names: Sequence[str] = None,
              skip_unreadable: bool = False, backend: Union[str, dict] = 'exact'
              ) -> 'OnnxRetriever':
        """Encode a gallery: a folder (searched recursively; names relative to it) or a list of
        image paths (``names`` default to the paths). A file listed twice is indexed once; an
        unreadable one stops the indexing with the full list, or with ``skip_unreadable`` is
        left out and listed in :attr:`skipped`, as :meth:`CIRRetriever.index` does."""
        if isinstance(images, str) or names is None:
            names, paths = gallery_files(images)
        else:
            names, paths = unique_files(list(names), [str(p) for p in images])
        pixels, failures = {}, {}
        for path in paths:
            try:
                pixels[path] = self.pixels([path])[0]
            except (OSError, ValueError) as err:
                failures[path] = f'{type(err).__name__}: {err}'
        if failures and not skip_unreadable:
            raise unreadable_gallery(failures, len(paths))
        self.skipped = failures
        kept = [(n, p) for n, p in zip(names, paths) if p in pixels]
        if not kept:
            raise ValueError(f'empty gallery: none of the {len(paths)} images can be read')
        batches = [np.stack([pixels[p] for _, p in kept[i:i + self.batch_size]])
                   for i in range(0, len(kept), self.batch_size)]
        feats = np.concatenate([self.gallery_encoder.run(None, {'image': b})[0]
                                for b in batches])
        self.gallery = GalleryIndex.from_features(feats, [n for n, _ in kept],
                                                  [p for _, p in kept], backend=backend)
        return self

    def load_index(self, index_dir: str, backend: Union[str, dict] = 'exact'
                   ) -> 'OnnxRetriever':
        """Search an index folder (``tools/build_index.py``) of the exported weights: the
        export and the index carry the same weights digest; another one is refused."""
        self.gallery = GalleryIndex.open(index_dir, self.model_digest, backend)
        return self

    @property
    def feats(self) -> np.ndarray:
        """The gallery features [G, D] float32, in index order."""
        gallery = self._require_index()
        return gallery.features(gallery.ids)

    def query(self, image: Union[str, Image.Image], text: str, topk: int = 10,
              exclude_reference: bool = True) -> List[Tuple[str, float]]:
        """Top-k ``(name, cosine score)``; the reference file is left out of its own ranking."""
        gallery = self._require_index()
        check_queries([image], [text], topk)
        query = self.composer.run(None, {'image': self.pixels([image]),
                                         'text_tokens': self.tokens([text])})[0]
        exclude = [[gallery.id_of_path(image)]] if exclude_reference and \
            isinstance(image, str) else None
        return gallery.hits(*gallery.search_ids(query, topk, exclude))[0]
