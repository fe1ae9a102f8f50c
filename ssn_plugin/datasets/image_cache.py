"""A memory-mapped cache of preprocessed images: decode, pad and resize once, read many times.

The deterministic head of an image pipeline (:class:`LoadCIRImages`, :class:`TargetPad`,
:class:`CLIPResizeCrop`) turns an image file into the same uint8 array every time. An
:class:`ImageStore` keeps those arrays for one dataset split and one pipeline in a single
``images.npy`` (a numpy ``.npy`` file, opened memory-mapped: no copy in RAM, pages shared by the
loader workers) with ``manifest.json`` (the pipeline's parameters, the image size, every source
file's path, size and mtime, the project version) and ``filled.npy`` (which rows are done, so an
interrupted build resumes). :class:`CachedCIRImages` replaces the pipeline's head with a lookup.

A store that no longer matches (an image file changed, another pipeline, another project version)
is an error that says how to rebuild it, never a silent wrong tensor.
"""
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import os.path as osp
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.logging import print_log
from mmengine.utils import ProgressBar

from ssn_plugin.image_io import file_stamp
from ssn_plugin.registry import TRANSFORMS
from ssn_plugin.version import __version__
from .transforms import CLIPResizeCrop, LoadCIRImages, TargetPad

# 2: each file's content digest is in the manifest.
STORE_FORMAT = 2
#: The transforms a cache may stand for: deterministic functions of the image file.
CACHEABLE = (LoadCIRImages, TargetPad, CLIPResizeCrop)
REBUILD_HINT = ('rebuild it with `python tools/build_image_cache.py CONFIG` (or delete the '
                'folder: training builds a missing cache on first use)')


class StaleCacheError(RuntimeError):
    """The image cache does not match the images or the pipeline it is used for."""


def describe(transforms: Sequence) -> str:
    """The pipeline parameters that decide the cached pixels (image keys left out: the same
    image gives the same pixels under any key)."""
    parts = []
    for transform in transforms:
        params = {k: v for k, v in sorted(vars(transform).items()) if k != 'keys'}
        parts.append(f'{type(transform).__name__}({json.dumps(params, default=str)})')
    return ' > '.join(parts)


def output_size(transforms: Sequence) -> Optional[tuple]:
    """(H, W) of the images the transforms produce (the last resize's size); None without a
    resize (then every image must already have the same size)."""
    resizes = [t for t in transforms if isinstance(t, CLIPResizeCrop)]
    if not resizes:
        return None
    size = resizes[-1].size
    if size is None:
        raise ValueError('the image cache needs CLIPResizeCrop\'s size: it is filled in from '
                         'the model by ImageSizeFromModelHook (or fill_image_size()) first')
    return (size, size) if isinstance(size, int) else tuple(size)


def file_digest(path: str) -> str:
    """BLAKE2b (128 bits) of a file's bytes: catches a changed file whose size and
    modification time stayed the same (measured cost: benchmarks/README.md)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _digests(paths: Sequence[str], workers: Optional[int] = None) -> List[str]:
    with ThreadPoolExecutor(workers or min(16, os.cpu_count() or 1)) as pool:
        return list(pool.map(file_digest, paths))


@contextlib.contextmanager
def _build_lock(directory: str):
    """One builder at a time in a cache folder (others wait, then find the store built): an
    flock on the folder that holds the store, released by the OS if the builder dies."""
    parent = osp.dirname(osp.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    fd = os.open(parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _reserve(path: str, nbytes: int, directory: str) -> None:
    """Allocate the store's disk space before writing (a disk that fills while a memory
    map is written kills the process with SIGBUS, without a message)."""
    free = shutil.disk_usage(osp.dirname(osp.abspath(path))).free
    if free < nbytes:
        raise OSError(errno.ENOSPC, f'the image cache {directory} needs {nbytes / 2**30:.2f} '
                      f'GiB, the disk has {free / 2**30:.2f} GiB free; free space or choose '
                      'another --image-cache folder')
    if not hasattr(os, 'posix_fallocate'):  # macOS: the free-space check above only
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as err:
        raise OSError(err.errno, f'could not reserve {nbytes / 2**30:.2f} GiB for the image '
                      f'cache {directory}: {err.strerror}') from err
    finally:
        os.close(fd)


class ImageStore:
    """The preprocessed images of one split under one pipeline, memory-mapped.

    Use :meth:`open` (check and map an existing store) or :meth:`build` (create or resume one).

    Args:
        directory (str): The store's folder.
    """

    def __init__(self, directory: str):
        self.directory = directory
        try:
            with open(osp.join(directory, 'manifest.json')) as f:
                self.manifest = json.load(f)
        except ValueError as err:
            raise StaleCacheError(f'the image cache {directory} has a damaged manifest.json '
                                  f'({err}); {REBUILD_HINT}') from err
        self.row = {entry[0]: i for i, entry in enumerate(self.manifest['files'])}
        self._images = None  # mapped on first read, in each loader process

    # ------------------------------------------------------------------ reading
    @property
    def images(self) -> np.ndarray:
        if self._images is None:
            self._images = self._map(self.directory, self.manifest)
        return self._images

    @staticmethod
    def _map(directory: str, manifest: dict) -> np.ndarray:
        """The memory-mapped images; a truncated, empty or foreign file is named."""
        path = osp.join(directory, 'images.npy')
        expected = (len(manifest['files']), *manifest['size'], 3)
        try:
            images = np.load(path, mmap_mode='r')
        except (OSError, ValueError, EOFError) as err:
            raise StaleCacheError(f'the image cache {path} is damaged ({type(err).__name__}: '
                                  f'{err}); {REBUILD_HINT}') from err
        if images.shape != expected or images.dtype != np.uint8:
            raise StaleCacheError(f'the image cache {path} holds {images.dtype} {images.shape}, '
                                  f'its manifest says uint8 {expected}; {REBUILD_HINT}')
        return images

    def get(self, path: str) -> np.ndarray:
        """The cached uint8 [H, W, 3] array of an image file (a copy, safe to modify)."""
        row = self.row.get(osp.abspath(path))
        if row is None:
            raise StaleCacheError(f'{path} is not in the image cache {self.directory}; '
                                  f'{REBUILD_HINT}')
        return np.array(self.images[row])

    def __getstate__(self):  # loader workers map the file themselves
        state = dict(self.__dict__)
        state['_images'] = None
        return state

    # ------------------------------------------------------------------ checking
    @classmethod
    def open(cls, directory: str, paths: Sequence[str], signature: str,
             verify: str = 'content') -> 'ImageStore':
        """Map a complete store after checking it against ``paths`` and ``signature``.

        ``verify='content'`` also re-hashes every source file (catches a file changed with
        its size and modification time kept); ``'stamp'`` checks size and modification time
        only (faster on slow disks)."""
        manifest_file = osp.join(directory, 'manifest.json')
        if not osp.isfile(manifest_file):
            raise StaleCacheError(f'no image cache at {directory}; build it with '
                                  '`python tools/build_image_cache.py CONFIG`')
        store = cls(directory)
        manifest = store.manifest
        problems = []
        if manifest.get('format') != STORE_FORMAT or manifest.get('version') != __version__:
            problems.append(f'it was written by ssn_plugin {manifest.get("version")} (store '
                            f'format {manifest.get("format")}), this is {__version__} (format '
                            f'{STORE_FORMAT})')
        if manifest.get('signature') != signature:
            problems.append(f'its pipeline is {manifest.get("signature")!r}, the dataset\'s is '
                            f'{signature!r}')
        if not manifest.get('complete'):
            problems.append('its build did not finish')
        if not problems:
            problems += store._changed_files(paths, verify)
        if problems:
            raise StaleCacheError(f'the image cache {directory} does not match: '
                                  + '; '.join(problems) + f'; {REBUILD_HINT}')
        store._images = cls._map(directory, manifest)
        return store

    def _changed_files(self, paths: Sequence[str], verify: str = 'content') -> List[str]:
        if verify not in ('content', 'stamp'):
            raise ValueError(f"verify must be 'content' or 'stamp', got {verify!r}")
        entries = {path: (stamp, digest) for path, stamp, digest in self.manifest['files']}
        absent = [p for p in paths if osp.abspath(p) not in entries]
        if absent:
            return [f'{len(absent)} images are not in it, e.g. {absent[:3]}']
        for path in paths:
            try:
                stamp = file_stamp(path)
            except FileNotFoundError:
                return [f'{path} no longer exists']
            if stamp != entries[osp.abspath(path)][0]:
                return [f'{path} changed after the cache was built (size or modification time)']
        if verify == 'content':
            for path, digest in zip(paths, _digests(paths)):
                if digest != entries[osp.abspath(path)][1]:
                    return [f'{path} changed after the cache was built (its content; size and '
                            'modification time are the same)']
        return []

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, directory: str, paths: Sequence[str], transforms: Sequence,
              workers: Optional[int] = None, progress: bool = True) -> 'ImageStore':
        """Create the store (or resume an interrupted build of the same files and pipeline).

        Every image is run through ``transforms`` once, in ``workers`` threads (PIL releases
        the GIL while decoding and resizing). Images that cannot be read are all listed at
        the end, in the error and in ``unreadable.txt`` in the store.
        """
        with _build_lock(directory):
            return cls._build_locked(directory, paths, transforms, workers, progress)

    @classmethod
    def _build_locked(cls, directory: str, paths: Sequence[str], transforms: Sequence,
                      workers: Optional[int], progress: bool) -> 'ImageStore':
        signature = describe(transforms)
        size = output_size(transforms)
        if size is None:  # no resize: the images' own size, which must be the same for all
            size = preprocess(paths[0], transforms).shape[:2]
        height, width = size
        files = [[osp.abspath(p), file_stamp(p), digest]
                 for p, digest in zip(paths, _digests(paths, workers))]
        manifest = dict(format=STORE_FORMAT, version=__version__, signature=signature,
                        size=[height, width], files=files, complete=False)
        filled = cls._resumable(directory, manifest)
        if filled is None:
            if osp.isdir(directory):
                shutil.rmtree(directory)
            os.makedirs(directory)
            array = np.lib.format.open_memmap(osp.join(directory, 'images.npy'), mode='w+',
                                              dtype=np.uint8,
                                              shape=(len(files), height, width, 3))
            nbytes = array.offset + array.nbytes
            del array
            _reserve(osp.join(directory, 'images.npy'), nbytes, directory)
            filled = np.lib.format.open_memmap(osp.join(directory, 'filled.npy'), mode='w+',
                                               dtype=bool, shape=(len(files), ))
            cls._write_manifest(directory, manifest)
        elif store_complete(directory):  # the same files and pipeline, finished by another
            return cls(directory)           # builder while this one waited for the lock
        images = np.load(osp.join(directory, 'images.npy'), mmap_mode='r+')
        todo = [i for i in range(len(files)) if not filled[i]]
        print_log(f'Image cache {directory}: {len(todo)} of {len(files)} images to preprocess '
                  f'({signature})', logger='current')
        failed = cls._fill(images, filled, [files[i][0] for i in todo], todo, transforms,
                           workers, progress)
        if failed:
            report = osp.join(directory, 'unreadable.txt')
            with open(report, 'w') as f:
                f.writelines(f'{path}\t{error}\n' for path, error in sorted(failed.items()))
            raise OSError(f'{len(failed)} images could not be preprocessed for the cache, e.g. '
                          f'{sorted(failed)[:3]}; the full list is in {report}. Fix or remove '
                          'them and run the build again (it resumes).')
        manifest['complete'] = True
        cls._write_manifest(directory, manifest)
        return cls(directory)

    @staticmethod
    def _resumable(directory: str, manifest: dict) -> Optional[np.ndarray]:
        """The ``filled`` flags of an interrupted build of the same files and pipeline."""
        try:
            with open(osp.join(directory, 'manifest.json')) as f:
                old = json.load(f)
            keys = ('format', 'version', 'signature', 'size', 'files')
            if any(old.get(k) != manifest[k] for k in keys):
                return None
            return np.load(osp.join(directory, 'filled.npy'), mmap_mode='r+')
        except (OSError, ValueError):
            return None

    @staticmethod
    def _write_manifest(directory: str, manifest: dict) -> None:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix='.manifest-', suffix='.tmp')
        with os.fdopen(fd, 'w') as f:
            json.dump(manifest, f)
        os.replace(tmp, osp.join(directory, 'manifest.json'))

    @staticmethod
    def _fill(images: np.ndarray, filled: np.ndarray, paths: List[str], rows: List[int],
              transforms: Sequence, workers: Optional[int], progress: bool) -> Dict[str, str]:
        def run(path):
            try:
                array = preprocess(path, transforms)
            except Exception as err:  # any decoding error: listed, the rest goes on
                return None, f'{type(err).__name__}: {err}'
            if array.shape != images.shape[1:]:
                return None, (f'preprocessed to {array.shape[:2]}, the cache holds '
                              f'{images.shape[1:3]} images; put CLIPResizeCrop in the pipeline')
            return array, None

        bar = ProgressBar(len(paths)) if progress and paths else None
        failed = {}
        pool = ThreadPoolExecutor(workers or min(16, os.cpu_count() or 1))
        try:
            for count, (row, path, (array, error)) in enumerate(
                    zip(rows, paths, pool.map(run, paths)), 1):
                if error is None:
                    images[row] = array
                    filled[row] = True
                else:
                    failed[path] = error
                if count % 1024 == 0:  # progress survives a crash
                    images.flush()
                    filled.flush()
                if bar is not None:
                    bar.update()
        finally:  # interrupted: keep what is done, drop what is queued
            pool.shutdown(wait=True, cancel_futures=True)
            images.flush()
            filled.flush()
        return failed


def store_complete(directory: str) -> bool:
    """Whether the store's manifest says its build finished."""
    try:
        with open(osp.join(directory, 'manifest.json')) as f:
            return json.load(f).get('complete') is True
    except (OSError, ValueError):
        return False


def preprocess(path: str, transforms: Sequence) -> np.ndarray:
    """Run the cacheable transforms on one image file: uint8 [H, W, 3]."""
    results = dict(img_path=path)
    for transform in transforms:
        results = transform(results)
    return np.asarray(results['img'], dtype=np.uint8)


def store_directory(root: str, name: str, signature: str) -> str:
    """``<root>/<name>-<hash of the pipeline>``: one store per split and pipeline."""
    digest = hashlib.sha256(signature.encode()).hexdigest()[:12]
    return osp.join(root, f'{name}-{digest}')


@TRANSFORMS.register_module()
class CachedCIRImages(BaseTransform):
    """Read preprocessed images from an :class:`ImageStore` instead of decoding and resizing.

    It stands for its ``transforms`` (the pipeline's deterministic head): the dataset puts it in
    their place when ``image_cache`` is set, and :meth:`prepare` (called once the model has
    filled in the image size) opens, or builds, the store.

    Required keys: ``<key>_path`` for each key (None = no image). Added keys: ``<key>``
    (uint8 [H, W, 3] array or None).

    Args:
        transforms (list): The cacheable transforms it replaces (built or as configs), with the
            image key ``img``.
        keys (Sequence[str]): Image keys of the samples. Defaults to ``('ref_img', 'tgt_img')``.
        cache_root (str): The folder holding the stores.
        name (str): The store's name, e.g. ``cirr_train``. Defaults to 'images'.
    """

    deterministic_pixels = True

    def __init__(self, transforms: Sequence, cache_root: str,
                 keys: Sequence[str] = ('ref_img', 'tgt_img'), name: str = 'images',
                 verify: str = 'content'):
        built = [TRANSFORMS.build(t) if isinstance(t, dict) else t for t in transforms]
        for transform in built:
            if not isinstance(transform, CACHEABLE):
                raise TypeError(f'{type(transform).__name__} cannot be cached: only '
                                f'{[c.__name__ for c in CACHEABLE]} are deterministic')
            transform.keys = ('img', )
        self.transforms = built
        self.keys = tuple(keys)
        self.cache_root = cache_root
        self.name = name
        self.verify = verify
        self.store: Optional[ImageStore] = None

    @property
    def signature(self) -> str:
        return describe(self.transforms)

    @property
    def directory(self) -> str:
        return store_directory(self.cache_root, self.name, self.signature)

    def prepare(self, paths: Sequence[str], build: bool = True, workers: Optional[int] = None,
                progress: bool = True, just_built: bool = False) -> ImageStore:
        """Open the store for ``paths``; build it when it does not exist and ``build``.

        A store that exists but does not match (changed files, an unfinished build of other
        files, another version) raises :class:`StaleCacheError`; it is never rebuilt behind
        the user's back, except for resuming an interrupted build of the same files. A store
        this process has just built (``just_built``, or built here) is not re-hashed: its
        digests were computed moments ago; sizes and modification times are still checked.
        """
        if build:
            just_built = self.build(paths, workers=workers, progress=progress) or just_built
        verify = 'stamp' if just_built else self.verify
        self.store = ImageStore.open(self.directory, paths, self.signature, verify)
        return self.store

    def build(self, paths: Sequence[str], workers: Optional[int] = None,
              progress: bool = True) -> bool:
        """Build the store when it is missing or its build was interrupted; a complete store
        is left for :meth:`prepare` to check. Returns whether it built."""
        if store_complete(self.directory):
            return False
        ImageStore.build(self.directory, paths, self.transforms, workers=workers,
                         progress=progress)
        return True

    def transform(self, results: dict) -> dict:
        if self.store is None:
            raise RuntimeError(
                f'the image cache under {self.cache_root} was not prepared: run through the '
                'Runner (ImageSizeFromModelHook prepares it) or call prepare_image_caches()')
        for key in self.keys:
            path = results.get(f'{key}_path')
            results[key] = None if path is None else self.store.get(path)
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(keys={self.keys}, cache_root={self.cache_root!r}, '
                f'transforms={self.transforms})')


def use_image_cache(transforms: List, cache_root: str, name: str,
                    verify: str = 'content') -> List:
    """Replace the cacheable head of a built pipeline by one :class:`CachedCIRImages`.

    The head is the run of :data:`CACHEABLE` transforms at the start (it must begin with
    :class:`LoadCIRImages`); anything after it (``PackCIRInputs``, caption transforms) stays.
    """
    head = 0
    while head < len(transforms) and isinstance(transforms[head], CACHEABLE):
        head += 1
    if head == 0 or not isinstance(transforms[0], LoadCIRImages):
        raise ValueError(f'image_cache needs a pipeline that starts with LoadCIRImages; got '
                         f'{[type(t).__name__ for t in transforms]}')
    keys = transforms[0].keys
    cached = CachedCIRImages(transforms[:head], cache_root, keys=keys, name=name, verify=verify)
    return [cached] + list(transforms[head:])
