"""Query your own gallery with a trained SSN: index a folder, ask "this image, but ..."."""
import copy
import hashlib
import os.path as osp
from typing import List, Optional, Sequence, Tuple, Union

import torch
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.utils import ProgressBar
from PIL import Image

from ssn_plugin.datasets.base import BaseCIRDataset, build_pipeline
from ssn_plugin.image_io import as_rgb_image, file_stamp
from ssn_plugin.datasets.transforms import LoadCIRImages, fill_image_size
from ssn_plugin.engine import load_local_checkpoint, safe_load
from ssn_plugin.engine.checkpoint import check_checkpoint_fits, strip_ddp_prefix
from ssn_plugin.index import GalleryIndex, IndexFolder, update_index_folder
from ssn_plugin.index.folder import DEFAULT_SHARD_ROWS
from ssn_plugin.models.clip_backbone import skip_pretrained_weights
from ssn_plugin.registry import MODELS
from ssn_plugin.version import __version__
from .gallery import (IndexedGallery, check_queries, gallery_files, index_problems,
                      unreadable_gallery)

# 2: paths are real paths, and each file's stamp is saved and checked on load.
INDEX_FORMAT = 2
Backend = Union[str, dict]


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 over a model's state dict (names and bytes), in its order."""
    sha = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        sha.update(name.encode())
        sha.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
                   .tobytes())
    return sha.hexdigest()


class CIRRetriever(IndexedGallery):
    """Index a gallery with SSN's gallery encoder and answer composed queries.

    The features are exactly those of the evaluation path: gallery images go through the
    config's ``gallery_pipeline`` and :meth:`SSN.gallery_features`; a query's reference image
    through the same image pipeline and :meth:`SSN.query_features` (the q+ branch).

    Args:
        config (str | Config): A model config (e.g. ``configs/cirr/ssn.py``).
        checkpoint (str, optional): A checkpoint from ``tools/train.py``; None keeps the
            model's initialisation (for tests). Defaults to None.
        device (str, optional): 'cuda', 'cpu', ...; None picks CUDA when available.
        batch_size (int): Images per forward pass when indexing. Defaults to 32.

    Examples:
        >>> from ssn_plugin.apis import CIRRetriever
        >>> retriever = CIRRetriever('configs/demo/ssn_shapes.py',
        ...                          'work_dirs/ssn_shapes/epoch_12.pth', device='cpu')
        >>> retriever.index('my_photos/', progress=False).names
        ['a.png', 'b.png', 'c.png']
        >>> hits = retriever.query('my_photos/a.png', 'make the red circle blue', topk=2)
        >>> [name for name, score in hits if name == 'a.png']  # the reference is left out
        []
        >>> len(hits), all(-1 <= score <= 1 for _, score in hits)
        (2, True)
        >>> retriever.save_index('my_photos.idx')
    """

    def __init__(self, config: Union[str, Config], checkpoint: Optional[str] = None,
                 device: Optional[str] = None, batch_size: int = 32):
        cfg = Config.fromfile(config) if isinstance(config, str) else config
        self.cfg = cfg
        self.device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
        self.batch_size = batch_size
        model_cfg = copy.deepcopy(cfg.model)
        if checkpoint is not None:
            # The checkpoint holds every weight: no CLIP download, works offline.
            skip_pretrained_weights(model_cfg)
        self.model = MODELS.build(model_cfg)
        if checkpoint is not None:
            self._load_weights(checkpoint)
        self.model.to(self.device).eval()
        transforms = build_pipeline(self._gallery_pipeline(cfg))
        fill_image_size(transforms, self.model.image_size)
        self.pipeline = Compose(transforms)
        self.gallery: Optional[GalleryIndex] = None
        self._digest: Optional[str] = None
        self.skipped: dict = {}  # unreadable gallery files left out by index(), path -> why

    def _load_weights(self, checkpoint: str) -> None:
        """Every weight from a ``tools/train.py`` checkpoint (safe loading, DDP prefix off)."""
        content = load_local_checkpoint(checkpoint, map_location='cpu')
        state = strip_ddp_prefix(content.get('state_dict', content))
        check_checkpoint_fits(self.model, state)  # a misfit named tensor by tensor
        self.model.load_state_dict(state, strict=True)

    @staticmethod
    def _gallery_pipeline(cfg: Config) -> list:
        for loader in ('test_dataloader', 'val_dataloader'):
            pipeline = cfg.get(loader, {}).get('dataset', {}).get('gallery_pipeline')
            if pipeline:
                return pipeline
        raise KeyError('the config has no test_dataloader.dataset.gallery_pipeline (or val_); '
                       'the retriever needs it to preprocess images as the evaluation does')

    # ------------------------------------------------------------------ identity
    @property
    def model_digest(self) -> str:
        """SHA-256 over the model's state dict: ties an index to the weights that built it."""
        if self._digest is None:
            self._digest = weights_digest(self.model)
        return self._digest

    # ------------------------------------------------------------------ encoding
    def _batch_images(self, paths: Sequence[Union[str, Image.Image]],
                      failures: Optional[dict] = None) -> Optional[torch.Tensor]:
        """The preprocessed batch; with ``failures``, unreadable files go there (path ->
        reason) instead of raising (None when no file of the batch is readable)."""
        samples = []
        for path in paths:
            try:
                samples.append(self._sample(path))
            except (OSError, ValueError) as err:
                if failures is None:
                    raise
                failures[path] = f'{type(err).__name__}: {err}'
        return self._preprocess(samples) if samples else None

    def _sample(self, image: Union[str, Image.Image]) -> dict:
        if not isinstance(image, Image.Image):
            return self.pipeline(dict(img_path=image))
        results = dict(img_path=None, img=as_rgb_image(image))
        # An in-memory image skips the loading step.
        for transform in self.pipeline.transforms:
            if not isinstance(transform, LoadCIRImages):
                results = transform(results)
        return results

    def _preprocess(self, samples: Sequence[dict]) -> torch.Tensor:
        """Packed samples -> the normalised image batch on the model's device."""
        data = dict(inputs=dict(img=[s['inputs']['img'] for s in samples]),
                    data_samples=[s['data_samples'] for s in samples])
        return self.model.data_preprocessor(data, False)['inputs']['img']

    @torch.no_grad()
    def encode_images(self, paths: Sequence[str], progress: bool = True,
                      failures: Optional[dict] = None) -> torch.Tensor:
        """L2-normalised gallery features [G, D] of image files, in batches; with
        ``failures`` (a dict), unreadable files are left out and recorded there."""
        return self._encode_batches(
            len(paths), lambda part: self._batch_images(paths[part], failures), progress)

    @torch.no_grad()
    def encode_dataset_gallery(self, dataset: BaseCIRDataset,
                               progress: bool = True) -> torch.Tensor:
        """Gallery features of a CIR dataset through its own gallery pipeline: a dataset with
        ``image_cache`` reads its preprocessed images instead of decoding them."""
        # Both pipelines: the query pipeline's cache is prepared with the gallery's.
        dataset.prepare_for_model(self.model.image_size)
        gallery = dataset.gallery_dataset()
        return self._encode_batches(
            len(gallery), lambda part: self._preprocess(
                [gallery[i] for i in range(part.start, part.stop)]), progress)

    def _encode_batches(self, count: int, batch_of, progress: bool) -> torch.Tensor:
        """Gallery features of ``count`` images, ``batch_of(slice)`` giving each batch."""
        bar = ProgressBar(count) if progress else None
        feats = []
        for start in range(0, count, self.batch_size):
            part = slice(start, min(start + self.batch_size, count))
            batch = batch_of(part)
            if batch is not None:
                feats.append(self.model.gallery_features(batch).float().cpu())
            if bar is not None:
                for _ in range(part.stop - part.start):
                    bar.update()
        return torch.cat(feats) if feats else torch.zeros(0, 0)

    @torch.no_grad()
    def encode_queries(self, images: Sequence[Union[str, Image.Image]],
                       texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised composed queries [N, D] (the q+ branch used for retrieval)."""
        if len(images) != len(texts):
            raise ValueError(f'{len(images)} reference images but {len(texts)} texts')
        return self.model.query_features(self._batch_images(images), list(texts)).float().cpu()

    # ------------------------------------------------------------------ index
    def index(self, images: Union[str, Sequence[str], BaseCIRDataset],
              progress: bool = True, skip_unreadable: bool = False,
              index_dir: Optional[str] = None, backend: Backend = 'exact',
              dtype: str = 'float32', shard_rows: int = DEFAULT_SHARD_ROWS) -> 'CIRRetriever':
        """Encode a gallery: a folder, a list of image paths, or a CIR dataset's gallery (read
        from its image cache when the dataset has one).

        A file listed twice (also through a symlink) is indexed once. An unreadable file
        (truncated, not an image, over the size bounds) stops the indexing, after all files
        were tried, with the full list; with ``skip_unreadable`` it is left out and listed in
        :attr:`skipped` (``path -> reason``).

        With ``index_dir`` the index is an index folder on disk (created, or brought up to
        date: only new or changed files are encoded, deleted ones dropped, a killed build
        resumes; see :func:`~ssn_plugin.index.update_index_folder`), features stored as
        ``dtype`` in shards of ``shard_rows``. ``backend`` (``'exact'``, ``'faiss'``,
        ``'milvus'`` or a dict with ``type``) searches it.
        """
        self.skipped = {}
        if index_dir is not None:
            return self._index_folder(images, index_dir, backend, dtype, shard_rows, progress,
                                      skip_unreadable)
        names, paths = self._gallery_files(images)
        if isinstance(images, BaseCIRDataset) and images.image_cache and \
                images.gallery_pipeline:
            feats = self.encode_dataset_gallery(images, progress)
            return self.index_features(feats, names, [osp.realpath(p) for p in paths],
                                       backend=backend)
        failures: dict = {}
        feats = self.encode_images(paths, progress=progress, failures=failures)
        if failures and not skip_unreadable:
            raise unreadable_gallery(failures, len(paths))
        self.skipped = failures
        kept = [(n, p) for n, p in zip(names, paths) if p not in failures]
        if not kept:
            raise ValueError(f'empty gallery: none of the {len(paths)} images in {images!r} '
                             'can be read')
        return self.index_features(feats, [n for n, _ in kept], [p for _, p in kept],
                                   stamps=[file_stamp(p) for _, p in kept], backend=backend)

    @staticmethod
    def _gallery_files(images: Union[str, Sequence[str], BaseCIRDataset]):
        """Names and paths of a gallery: a CIR dataset's, in its order, or
        :func:`gallery_files`' of a folder or a list."""
        if isinstance(images, BaseCIRDataset):
            return images.gallery_names, [entry['img_path'] for entry in images.gallery]
        return gallery_files(images)

    def index_features(self, feats, names: Sequence[str], paths: Optional[Sequence[str]] = None,
                       stamps: Optional[Sequence] = None, backend: Backend = 'exact',
                       dtype: str = 'float32') -> 'CIRRetriever':
        """An index of precomputed gallery features [G, D] (L2-normalised, e.g. from
        :meth:`encode_images` or another machine) and their names; ``paths`` default to the
        names. The features are checked (shape, finite values) here, once."""
        if isinstance(feats, torch.Tensor):
            feats = feats.detach().cpu().float().numpy()
        self.gallery = GalleryIndex.from_features(feats, names, paths, stamps, dtype, backend)
        return self

    def _index_folder(self, images, index_dir: str, backend: Backend, dtype: str,
                      shard_rows: int, progress: bool, skip_unreadable: bool
                      ) -> 'CIRRetriever':
        names, paths = self._gallery_files(images)
        report = self.update_index_folder(index_dir, names, paths, dtype=dtype,
                                          shard_rows=shard_rows, progress=progress)
        if report['failures'] and not skip_unreadable:
            raise unreadable_gallery(report['failures'], len(paths))
        self.skipped = report['failures']
        return self.load_index(index_dir, backend=backend)

    def update_index_folder(self, index_dir: str, names: Sequence[str], paths: Sequence[str],
                            dtype: str = 'float32', shard_rows: int = DEFAULT_SHARD_ROWS,
                            progress: bool = True, rank: int = 0, world_size: int = 1,
                            barrier=lambda: None, on_commit=lambda chunk: None) -> dict:
        """Create or update an index folder of these weights for the gallery ``names`` /
        ``paths`` (see :func:`~ssn_plugin.index.update_index_folder`; the other arguments
        are passed on). Returns its report."""
        folder = IndexFolder(index_dir)
        with folder.locked():
            if not folder.exists and rank == 0:
                folder.create(self.model_digest, self.model.clip.embed_dim, dtype, __version__)
        barrier()
        folder.open(self.model_digest)
        if folder.dtype != dtype:
            raise ValueError(f'{index_dir} stores {folder.dtype} features, not {dtype}; '
                             'build a new index folder to change it')

        def encode(chunk_paths, failures):
            return self.encode_images(list(chunk_paths), progress=False,
                                      failures=failures).numpy()

        bar = ProgressBar(len(paths)) if progress and rank == 0 else None
        return update_index_folder(
            folder, names, paths, encode, shard_rows, rank, world_size, barrier, on_commit,
            progress=None if bar is None else lambda n: [bar.update() for _ in range(n)])

    def save_index(self, path: str) -> None:
        """Save features, names, paths, each file's stamp and the model digest in one file
        (an index held in memory; an index folder is saved as it is built)."""
        self._require_index()
        torch.save(dict(format=INDEX_FORMAT, version=__version__, feats=self.feats,
                        names=self.names, paths=self.paths,
                        stamps=[file_stamp(p) for p in self.paths],
                        model_digest=self.model_digest), path)

    def load_index(self, path: str, backend: Backend = 'exact') -> 'CIRRetriever':
        """Load an index folder (``tools/build_index.py``, :meth:`index` with ``index_dir``)
        or an index file saved by :meth:`save_index`, searched by ``backend``.

        Refused: an index built by other weights, and (an index file) one whose files are not
        the gallery it claims: a path that is not an image file (by extension), a file
        deleted, or changed (size or modification time) since the index was saved. The error
        lists them all.
        """
        if osp.isdir(path):
            self.gallery = GalleryIndex.open(path, self.model_digest, backend)
            return self
        if not osp.isfile(path):
            raise FileNotFoundError(f'index file not found: {path}')
        content = safe_load(path, map_location='cpu')
        if not isinstance(content, dict) or content.get('format') != INDEX_FORMAT:
            raise ValueError(f'{path} is not an ssn_plugin index of format {INDEX_FORMAT} '
                             '(older indexes: rebuild it with --save-index)')
        if content['model_digest'] != self.model_digest:
            raise ValueError(
                f'{path} was built by a different model (weights digest '
                f'{content["model_digest"][:12]}..., this model {self.model_digest[:12]}...); '
                'rebuild the index with this checkpoint')
        problems = index_problems(content['paths'], content['stamps'])
        if problems:
            raise ValueError(f'{path} does not match the files it indexes ({len(problems)} of '
                             f'{len(content["paths"])}); rebuild it:\n' + '\n'.join(problems[:20]))
        return self.index_features(content['feats'], content['names'], content['paths'],
                                   content['stamps'], backend=backend)

    @property
    def feats(self) -> Optional[torch.Tensor]:
        """The gallery features [G, D] float32, in index order (None before indexing)."""
        if self.gallery is None:
            return None
        return torch.from_numpy(self.gallery.features(self.gallery.ids))

    # ------------------------------------------------------------------ queries
    def search(self, query_feats, topk: int = 10,
               exclude: Optional[Sequence[Optional[Sequence[str]]]] = None
               ) -> List[List[Tuple[str, float]]]:
        """Per query row of ``query_feats`` [N, D], up to ``topk`` ``(name, cosine score)``
        pairs, best first; ``exclude[i]`` (gallery names, or None) left out of row i's."""
        if isinstance(query_feats, torch.Tensor):
            query_feats = query_feats.detach().cpu().float().numpy()
        return self._require_index().search(query_feats, topk, exclude)

    def query_batch(self, images: Sequence[Union[str, Image.Image]], texts: Sequence[str],
                    topk: int = 10, exclude_reference: bool = True
                    ) -> List[List[Tuple[str, float]]]:
        """Top-k ``(name, cosine score)`` per query, best first: the composed query
        (:meth:`encode_queries`) followed by :meth:`search`.

        With ``exclude_reference`` a reference image that is itself in the gallery (the same
        file, also through a symlink) is left out of its own results, as the CIRR protocol
        does. ``topk`` must be a positive int (fewer come back when the gallery is smaller);
        images and texts must be non-empty and of one length.
        """
        gallery = self._require_index()
        check_queries(images, texts, topk)
        queries = self.encode_queries(images, texts).numpy()
        exclude = [[gallery.id_of_path(img)] if exclude_reference and isinstance(img, str)
                   else None for img in images]
        return gallery.hits(*gallery.search_ids(queries, topk, exclude))

    def query(self, image: Union[str, Image.Image], text: str, topk: int = 10,
              exclude_reference: bool = True) -> List[Tuple[str, float]]:
        """Top-k ``(name, cosine score)`` for one reference image and text."""
        return self.query_batch([image], [text], topk, exclude_reference)[0]
