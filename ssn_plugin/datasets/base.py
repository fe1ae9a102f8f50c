"""Shared machinery of the composed-image-retrieval datasets."""
import json
import os
import os.path as osp
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from mmengine.dataset import BaseDataset
from mmengine.dist import barrier, is_main_process
from mmengine.logging import MMLogger, print_log
from mmengine.utils import ProgressBar

from ssn_plugin.registry import DATASETS, TRANSFORMS
from .image_cache import CachedCIRImages, use_image_cache
from ssn_plugin.image_io import read_image
from .transforms import fill_image_size, fill_meta_keys


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
    except RecursionError as err:
        raise ValueError(f'{path}: the JSON is nested too deeply to be an annotation file '
                         f'(expected layout:\n{layout})') from err


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
        read_image(path)  # the loader of training: the same bounds and conversions
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
        if not is_of(record[key], kind):
            raise ValueError(f'{where}: {key!r} should be {kind.__name__}, got '
                             f'{type(record[key]).__name__}')


def is_of(value: Any, kind: type) -> bool:
    """``isinstance``, except that a bool is not an int (``true`` is no pairid or image id)."""
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


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
    unknown) and dataset-specific keys; the pipeline decides which images to load.

    The base owns the bookkeeping: it validates ``split`` against :attr:`SPLITS`, sets
    ``has_targets`` (False on :attr:`UNLABELLED_SPLITS`), checks the images
    (:meth:`find_missing_images`: the whole gallery on evaluation splits, the images the
    records use on train), builds :attr:`gallery` from the present images, drops the records
    with a missing image (logged and kept in :attr:`dropped_ids`) and makes the items. A new
    dataset writes its reading and its record checks only:

    * :meth:`read_annotations` returns the checked records and the gallery, name -> image path,
      in gallery order;
    * :meth:`record_images` names the gallery images a record uses;
    * :meth:`make_item` turns a complete record into an item;
    * class attributes: ``NAME`` (for messages), ``REPORT_NAME`` (the report file's name),
      ``SPLITS``, ``UNLABELLED_SPLITS``, ``LAYOUT``, ``META_KEYS``, ``RECORDS`` and
      ``RECORD_ID`` (how the drop log names records).

    A subclass sets its own attributes first and then calls ``super().__init__``, which loads
    the annotations (``BaseDataset`` does, unless ``lazy_init``).

    Args:
        data_root (str): The dataset root.
        split (str): One of :attr:`SPLITS`.
        pipeline (list): Transforms of a query/triplet item.
        gallery_pipeline (list, optional): Pipeline of the gallery dataset used at evaluation
            (transform configs or built transforms; built once here). Defaults to None (then
            :meth:`gallery_dataset` needs one).
        skip_missing (bool): Drop the records with a missing image and the missing gallery
            images, counted in the log (the full list is written to the report file either
            way), instead of raising :class:`MissingImages`. Defaults to False.
        check_images (bool): Check that the image files exist when the annotations load.
            Defaults to True.
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
        image_cache_verify (str): How an existing store is checked against the image files
            when it opens: ``'content'`` re-hashes every file (catches a file changed with
            its size and modification time kept; about 1 ms an image, benchmarks/README.md),
            ``'stamp'`` compares size and modification time only. Defaults to 'content'.
        **kwargs: Passed to ``BaseDataset`` (``metainfo``, ``indices``, ``lazy_init``, ...).
    """

    NAME = 'CIR'
    REPORT_NAME = 'cir'
    SPLITS: Tuple[str, ...] = ()
    UNLABELLED_SPLITS: Tuple[str, ...] = ()
    #: Appended to the unknown-split error.
    SPLIT_HINT = ''
    LAYOUT = ''
    #: Where the data comes from, for tools/check_data.py when the root is absent.
    SOURCE = ''
    RECORDS = 'records'
    RECORD_ID = 'id'
    #: Attributes put into ``metainfo`` next to ``split`` (the metric states them).
    METAINFO_KEYS: Tuple[str, ...] = ()
    #: Item keys packed into each query's data sample (``PackCIRInputs(meta_keys=None)``):
    #: what the model (``text``) and the dataset's metric read. Subclasses extend it.
    META_KEYS = ('text', 'ref_index', 'target_index', 'sample_idx', 'ref_img_path', 'ref_name',
                 'tgt_img_path', 'tgt_name')
    #: Where the images are, for messages (subclasses set it before ``super().__init__``).
    image_root: Optional[str] = None

    def __init__(self, data_root: str, split: str, pipeline: Sequence = (),
                 gallery_pipeline: Optional[Sequence] = None, skip_missing: bool = False,
                 check_images: bool = True, report_dir: Optional[str] = None,
                 decode_images: bool = False, image_cache: Optional[str] = None,
                 image_cache_verify: str = 'content', **kwargs):
        if split not in self.SPLITS:
            raise ValueError(f'Unknown {self.NAME} split {split!r}: expected one of '
                             f'{self.SPLITS}{self.SPLIT_HINT}.')
        self.split = split
        self.has_targets = split not in self.UNLABELLED_SPLITS
        self.skip_missing = skip_missing
        self.check_images = check_images
        self.report_dir = report_dir
        self.decode_images = decode_images
        self.image_cache = image_cache
        self.image_cache_verify = image_cache_verify
        self.gallery: List[dict] = []
        self.dropped_ids: List = []
        #: group -> {'checked', 'missing', 'unreadable'}: counts of the last image check.
        self.image_check: Dict[str, Dict[str, int]] = {}
        # Built once, so that settings filled in later (the model's image size) are kept.
        self.gallery_pipeline = (None if gallery_pipeline is None else
                                 self._cached(build_pipeline(gallery_pipeline)))
        transforms = self._cached(build_pipeline(pipeline))
        fill_meta_keys(transforms, self.META_KEYS)
        metainfo = dict(kwargs.pop('metainfo', None) or {}, split=split,
                        **{key: getattr(self, key) for key in self.METAINFO_KEYS})
        super().__init__(data_root=data_root, pipeline=transforms, metainfo=metainfo, **kwargs)

    # ------------------------------------------------------------------ what subclasses write
    def read_annotations(self) -> Tuple[List[dict], Dict[str, str]]:
        """The checked records and the gallery (name -> image path, in gallery order)."""
        raise NotImplementedError

    def record_images(self, record: dict) -> List[str]:
        """The gallery names of the images ``record`` uses."""
        raise NotImplementedError

    def make_item(self, record: dict, paths: Dict[str, str], index: Dict[str, int]) -> dict:
        """The item of a record whose images are all present (``index``: name -> gallery row)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the bookkeeping
    def load_data_list(self) -> List[dict]:
        records, paths = self.read_annotations()
        missing = self.find_missing_images(
            {self.split: self.images_to_check(records, paths)}).get(self.split, {})
        index = self.add_to_gallery(paths, missing)
        kept = self.complete_indices(records, missing)
        self.dropped_ids = [records[i].get(self.RECORD_ID, i) for i in
                            sorted(set(range(len(records))) - set(kept))]
        if self.dropped_ids:
            print_log(f'{self.NAME} {self.split}: dropped {len(self.dropped_ids)} of '
                      f'{len(records)} {self.RECORDS} with a missing image; {self.RECORD_ID}s: '
                      f'{self.dropped_ids}', logger='current')
        return [self.make_item(records[i], paths, index) for i in kept]

    def images_to_check(self, records: List[dict], paths: Dict[str, str]) -> Dict[str, str]:
        """Training checks the images its records use (split files may list images no triplet
        uses); evaluation checks the whole gallery."""
        if self.split != 'train':
            return paths
        used = {name for record in records for name in self.record_images(record)}
        return {name: path for name, path in paths.items() if name in used}

    def find_missing_images(self, groups: Dict[str, Dict[str, str]]
                            ) -> Dict[str, Dict[str, str]]:
        """group -> {name: path} of the missing (or, with ``decode_images``, unreadable)
        images among ``groups`` (group -> {name: path}: the split, or Fashion-IQ's
        categories), reported by :func:`report_missing` (raises unless ``skip_missing``);
        {} when ``check_images`` is off."""
        if not self.check_images:
            return {}
        missing, problems = {}, {}
        for group, paths in groups.items():
            found = find_bad_images(paths, decode=self.decode_images)
            missing[group] = {name: paths[name] for name in found}
            problems.update(found)
            unreadable = sum(p != 'missing' for p in found.values())
            self.image_check[group] = dict(checked=len(paths), missing=len(found) - unreadable,
                                           unreadable=unreadable)
        where = f' ({self.image_root})' if self.image_root else ''
        report_missing(missing, {group: len(paths) for group, paths in groups.items()},
                       f'{self.NAME} {self.split}{where}', self.LAYOUT, self.skip_missing,
                       self.report_file(), problems)
        return missing

    def add_to_gallery(self, paths: Dict[str, str], missing: Dict[str, str],
                       group: Optional[str] = None) -> Dict[str, int]:
        """Append the present images of ``paths`` (in its order) to :attr:`gallery`.

        Returns:
            dict: name -> gallery row of the appended images.
        """
        start = len(self.gallery)
        names = [name for name in paths if name not in missing]
        extra = {} if group is None else dict(group=group)
        self.gallery.extend(dict(name=name, img_path=paths[name], **extra) for name in names)
        return {name: start + i for i, name in enumerate(names)}

    def complete_indices(self, records: List[dict], missing: Dict[str, str]) -> List[int]:
        """Indices of the records none of whose images is missing."""
        return [i for i, record in enumerate(records)
                if not any(name in missing for name in self.record_images(record))]

    def _cached(self, transforms: List) -> List:
        """With ``image_cache``, the pipeline's cacheable head becomes a cache lookup."""
        if self.image_cache is None or not transforms:
            return transforms
        return use_image_cache(transforms, self.image_cache,
                               f'{type(self).__name__.lower()}_{self.split}',
                               self.image_cache_verify)

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
        built = set()
        if build:
            if is_main_process():
                built = {d for d, (first, *_) in by_store.items()
                         if first.build(paths, workers=workers)}
            barrier()
        for directory, (first, *others) in by_store.items():
            store = first.prepare(paths, build=False, just_built=directory in built)
            for transform in others:
                transform.store = store
        return len(cached)

    def prepare_for_model(self, image_size: Sequence[int], build_caches: bool = True,
                          workers: Optional[int] = None) -> Tuple[int, int]:
        """Make the pipelines ready for a model: resize steps left without a size
        (``CLIPResizeCrop()``) get the model's input resolution, then the image caches, whose
        pixels depend on it, are opened (built first where missing and ``build_caches``).

        Called by :class:`~ssn_plugin.engine.ImageSizeFromModelHook` before each run, by the
        retriever and by ``tools/build_image_cache.py``.

        Args:
            image_size (Sequence[int]): The model's (H, W).
            build_caches (bool): Build a missing image cache (on the main process; the others
                wait). False: a missing cache is an error naming the build command.
                Defaults to True.
            workers (int, optional): Threads of a cache build. Defaults to None (up to 16).

        Returns:
            tuple[int, int]: how many transforms got the size, how many cache lookups were
            prepared.
        """
        filled = fill_image_size(pipeline_transforms(self), image_size)
        return filled, self.prepare_image_caches(build=build_caches, workers=workers)

    def gallery_dataset(self, pipeline: Optional[Sequence] = None) -> CIRGalleryDataset:
        """The gallery images as a dataset, in :attr:`gallery` order."""
        pipeline = self.gallery_pipeline if pipeline is None else pipeline
        if pipeline is None:
            raise ValueError(f'{type(self).__name__} has no gallery_pipeline; set it in the '
                             'dataset config to evaluate retrieval.')
        items = [dict(entry, gallery_index=i) for i, entry in enumerate(self.gallery)]
        return CIRGalleryDataset(items, pipeline)

    def report_file(self) -> str:
        """Where :func:`report_missing` writes this split's list of missing images."""
        return osp.join(self.report_dir or default_report_dir(),
                        f'missing_images_{self.REPORT_NAME}_{self.split}.txt')

    @property
    def gallery_names(self) -> List[str]:
        return [entry['name'] for entry in self.gallery]
