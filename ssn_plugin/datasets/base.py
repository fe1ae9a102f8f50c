"""Shared machinery of the composed-image-retrieval datasets."""
import json
import os
import os.path as osp
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from mmengine.dataset import BaseDataset
from mmengine.dist import barrier, is_main_process
from mmengine.logging import MMLogger, print_log
from mmengine.utils import ProgressBar
from PIL import Image

from ssn_plugin.registry import DATASETS, TRANSFORMS
from .image_cache import CachedCIRImages, use_image_cache
from .transforms import fill_meta_keys


def build_pipeline(pipeline: Sequence[Union[dict, Callable]]) -> List[Callable]:
    """Build transform dicts through our registry, so no default scope is needed."""
    return [TRANSFORMS.build(t) if isinstance(t, dict) else t for t in pipeline]


def load_json(path: str, layout: str) -> Any:
    """Read an annotation file; a missing or broken file names itself and the layout."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'annotation file not found: {path}\nExpected layout:\n{layout}')
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f'{path} is not valid JSON: {err}') from err


def pipeline_transforms(dataset) -> List:
    """The built transforms of a dataset's pipeline and, for a CIR dataset, of its gallery
    pipeline: what the model's image size is filled into and where image caches sit."""
    return (list(getattr(getattr(dataset, 'pipeline', None), 'transforms', []))
            + list(getattr(dataset, 'gallery_pipeline', None) or []))


class MissingImages(FileNotFoundError):
    """Raised when images referenced by the annotations are absent."""


def default_report_dir() -> str:
    """The current run's log directory (inside the work dir), else the working directory."""
    log_file = getattr(MMLogger.get_current_instance(), 'log_file', None)
    return osp.dirname(log_file) if log_file else os.getcwd()


def _decode_error(path: str) -> Optional[str]:
    """None when the image decodes completely, else why it does not."""
    try:
        with Image.open(path) as image:
            image.load()
        return None
    except Exception as err:  # PIL raises many types for broken files; all mean unreadable
        return f'{type(err).__name__}: {err}'


def find_bad_images(paths: Dict[str, str], decode: bool = False,
                    workers: Optional[int] = None) -> Dict[str, str]:
    """name -> problem (``'missing'`` or ``'unreadable: <error>'``) for the images in ``paths``.

    Existence is always checked; with ``decode`` every present file is also decoded once, in
    ``workers`` threads (PIL releases the GIL while decompressing), with a progress bar, so a
    truncated, empty or non-image file is found before training instead of hours into it.
    """
    bad = {name: 'missing' for name, path in paths.items() if not osp.isfile(path)}
    if not decode:
        return bad
    present = [(name, path) for name, path in paths.items() if name not in bad]
    print_log(f'Decoding {len(present)} images to check them', logger='current')
    bar = ProgressBar(len(present))
    with ThreadPoolExecutor(workers or min(16, os.cpu_count() or 1)) as pool:
        for (name, _), error in zip(present, pool.map(_decode_error, [p for _, p in present])):
            bar.update()
            if error is not None:
                bad[name] = f'unreadable: {error}'
    return bad


def report_missing(missing: Dict[str, Dict[str, str]], totals: Dict[str, int], what: str,
                   layout: str, skip_missing: bool, report_file: str,
                   problems: Optional[Dict[str, str]] = None) -> None:
    """Write the full list of missing (or unreadable) images, then raise, or log the counts
    when skipping.

    Args:
        missing (dict): group (a split or category) -> {image name: expected path}.
        totals (dict): group -> number of distinct images the annotations reference.
        what (str): Which dataset/split, for the messages.
        layout (str): The expected directory layout, shown in the error.
        skip_missing (bool): Log and continue instead of raising.
        report_file (str): Where the list goes, one ``group<TAB>name<TAB>path<TAB>problem``
            per line.
        problems (dict, optional): name -> problem from :func:`find_bad_images`. Defaults to
            None (every image is missing).
    """
    total = sum(len(m) for m in missing.values())
    if not total:
        return
    problems = problems or {}
    os.makedirs(osp.dirname(osp.abspath(report_file)), exist_ok=True)
    with open(report_file, 'w') as f:
        for group, lost in missing.items():
            f.writelines(f'{group}\t{name}\t{path}\t{problems.get(name, "missing")}\n'
                         for name, path in sorted(lost.items()))
    kind = ('missing or unreadable' if any(p != 'missing' for p in problems.values())
            else 'missing')
    counts = ', '.join(f'{g}: {len(m)} of {totals[g]}' for g, m in missing.items())
    examples = ', '.join(sorted(p for m in missing.values() for p in m.values())[:5])
    summary = (f'{what}: {total} of {sum(totals.values())} referenced images are {kind} '
               f'({counts}); the full list is in {report_file}, e.g. {examples}.')
    if not skip_missing:
        raise MissingImages(
            f'{summary}\nExpected layout:\n{layout}\nPass skip_missing=True to drop the '
            'affected samples and gallery images (counted in the log).')
    print_log(f'skip_missing=True: {summary}', logger='current')


def check_record(record: Any, required: Dict[str, type], where: str, split: str) -> None:
    """A JSON record must be an object holding every ``required`` key with the given type."""
    if not isinstance(record, dict):
        raise ValueError(f'{where}: expected a JSON object, got {type(record).__name__}')
    for key, kind in required.items():
        if key not in record:
            raise ValueError(f'{where}: missing key {key!r}; a {split} record needs '
                             f'{sorted(required)}')
        if not isinstance(record[key], kind):
            raise ValueError(f'{where}: {key!r} should be {kind.__name__}, got '
                             f'{type(record[key]).__name__}')


@DATASETS.register_module()
class CIRGalleryDataset(BaseDataset):
    """The gallery of a CIR dataset: one item per gallery image.

    Built by :meth:`BaseCIRDataset.gallery_dataset`; items are
    ``dict(img_path, name, gallery_index)`` (plus ``group`` where the dataset has one, e.g.
    the Fashion-IQ category), in the gallery order of the query dataset. ``META_KEYS`` are packed
    into each data sample; the model adds ``gallery_feat``, and
    :func:`~ssn_plugin.engine.encode_gallery` reads ``gallery_index`` and ``gallery_feat``.

    Args:
        items (list[dict]): The gallery items.
        pipeline (list): Transforms; typically ``LoadCIRImages(keys=('img',))``, the image
            transforms and ``PackCIRInputs``.
    """

    META_KEYS = ('gallery_index', 'name', 'img_path', 'group')

    def __init__(self, items: List[dict], pipeline: Sequence = ()):
        self._items = items
        transforms = build_pipeline(pipeline)
        fill_meta_keys(transforms, self.META_KEYS)
        super().__init__(pipeline=transforms, serialize_data=False, test_mode=True)

    def load_data_list(self) -> List[dict]:
        return [dict(item) for item in self._items]


class BaseCIRDataset(BaseDataset):
    """Base of the CIR datasets: queries/triplets plus an indexed gallery.

    Every item is a plain dict with ``text``, ``ref_img_path``, ``tgt_img_path`` (None when
    the target is unknown), ``ref_index``/``target_index`` (indices into :attr:`gallery`, -1 when
    unknown) and dataset-specific keys; the pipeline decides which images to load. Subclasses
    fill :attr:`gallery` (list of dicts ``name``, ``img_path``, ``group``) and return items
    from :meth:`load_data_list`.

    Args:
        gallery_pipeline (list, optional): Pipeline of the gallery dataset used at evaluation
            (transform configs or built transforms; built once here). Defaults to None (then
            :meth:`gallery_dataset` needs one).
        report_dir (str, optional): Where the list of missing images is written
            (``missing_images_<dataset>_<split>.txt``); None = the current run's log directory
            in the work dir (or the working directory outside a run). Defaults to None.
        decode_images (bool): Also decode every checked image once, in parallel, when the
            annotations load, and report every unreadable file (truncated, empty, not an image)
            with the missing ones, before training starts. Defaults to False (existence only).
        image_cache (str, optional): A folder for preprocessed images: the pipelines' decode,
            pad and resize steps are replaced by reads from a memory-mapped store of this split
            (:class:`~ssn_plugin.datasets.image_cache.CachedCIRImages`), built on first use or
            by ``tools/build_image_cache.py``. Defaults to None (decode every time).
        **kwargs: Passed to ``BaseDataset``.
    """

    LAYOUT = ''
    #: Item keys packed into each query's data sample (``PackCIRInputs(meta_keys=None)``):
    #: what the model (``text``) and the dataset's metric read. Subclasses extend it.
    META_KEYS = ('text', 'ref_index', 'target_index', 'sample_idx', 'ref_img_path', 'ref_name',
                 'tgt_img_path', 'tgt_name')

    def __init__(self, pipeline: Sequence = (), gallery_pipeline: Optional[Sequence] = None,
                 report_dir: Optional[str] = None, decode_images: bool = False,
                 image_cache: Optional[str] = None, **kwargs):
        self.report_dir = report_dir
        self.decode_images = decode_images
        self.image_cache = image_cache
        self.gallery: List[dict] = []
        # Built once, so that settings filled in later (the model's image size) are kept.
        self.gallery_pipeline = (None if gallery_pipeline is None else
                                 self._cached(build_pipeline(gallery_pipeline)))
        transforms = self._cached(build_pipeline(pipeline))
        fill_meta_keys(transforms, self.META_KEYS)
        super().__init__(pipeline=transforms, **kwargs)

    def _cached(self, transforms: List) -> List:
        """With ``image_cache``, the pipeline's cacheable head becomes a cache lookup."""
        if self.image_cache is None or not transforms:
            return transforms
        return use_image_cache(transforms, self.image_cache,
                               f'{type(self).__name__.lower()}_{self.split}')

    def cached_image_transforms(self) -> List[CachedCIRImages]:
        """The cache lookups of the query and gallery pipelines."""
        return [t for t in pipeline_transforms(self) if isinstance(t, CachedCIRImages)]

    def image_paths(self) -> List[str]:
        """Every image file this split reads: the gallery and each item's images."""
        paths = {entry['img_path'] for entry in self.gallery}
        for i in range(len(self)):
            item = self.get_data_info(i)
            paths.update(item[k] for k in ('ref_img_path', 'tgt_img_path') if item.get(k))
        return sorted(paths)

    def prepare_image_caches(self, build: bool = True, workers: Optional[int] = None) -> int:
        """Open the image caches of the pipelines (after the image size is known), building
        them first where missing and ``build`` (on the main process; the others wait).

        Returns:
            int: how many pipeline lookups were prepared.
        """
        cached = self.cached_image_transforms()
        if not cached:
            return 0
        paths = self.image_paths()
        # Pipelines that preprocess alike (query and gallery, usually) share one store.
        by_store: Dict[str, List[CachedCIRImages]] = {}
        for transform in cached:
            by_store.setdefault(transform.directory, []).append(transform)
        if build:
            if is_main_process():
                for first, *_ in by_store.values():
                    first.build(paths, workers=workers)
            barrier()
        for first, *others in by_store.values():
            store = first.prepare(paths, build=False)
            for transform in others:
                transform.store = store
        return len(cached)

    def gallery_dataset(self, pipeline: Optional[Sequence] = None) -> CIRGalleryDataset:
        """The gallery images as a dataset, in :attr:`gallery` order."""
        pipeline = self.gallery_pipeline if pipeline is None else pipeline
        if pipeline is None:
            raise ValueError(f'{type(self).__name__} has no gallery_pipeline; set it in the '
                             'dataset config to evaluate retrieval.')
        items = [dict(entry, gallery_index=i) for i, entry in enumerate(self.gallery)]
        return CIRGalleryDataset(items, pipeline)

    def find_missing_images(self, paths: Dict[str, str], dataset_name: str,
                            what: str) -> Dict[str, str]:
        """name -> path of the missing (or, with ``decode_images``, unreadable) images among
        ``paths``, this split's images, reported by :func:`report_missing` (raises unless
        ``skip_missing``); {} when ``check_images`` is off. Subclasses set ``check_images``,
        ``skip_missing`` and :attr:`LAYOUT`."""
        if not self.check_images:
            return {}
        problems = find_bad_images(paths, decode=self.decode_images)
        missing = {name: paths[name] for name in problems}
        report_missing({self.split: missing}, {self.split: len(paths)}, what, self.LAYOUT,
                       self.skip_missing, self.report_file(dataset_name), problems)
        return missing

    def report_file(self, dataset_name: str) -> str:
        """Where :func:`report_missing` writes this split's list of missing images."""
        return osp.join(self.report_dir or default_report_dir(),
                        f'missing_images_{dataset_name}_{self.split}.txt')

    @property
    def gallery_names(self) -> List[str]:
        return [entry['name'] for entry in self.gallery]
