"""A gallery of image files, as both retrievers (PyTorch and ONNX) take it: the files of a
folder or a list, each once; the checks of a saved index's files and of a query; the indexed
gallery a retriever holds. Needs numpy and Pillow only (no torch): the ONNX serving path
imports it.
"""
import os
import os.path as osp
from typing import List, Optional, Sequence, Tuple, Union

from PIL import Image

from ssn_plugin.image_io import file_stamp
from ssn_plugin.index import GalleryIndex

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.webp', '.bmp', '.gif', '.tif', '.tiff')


def list_images(folder: str) -> List[str]:
    """Image files under ``folder`` (recursively, symlinked sub-folders included, each real
    folder once), sorted."""
    if not osp.isdir(folder):
        raise FileNotFoundError(f'gallery folder not found: {folder}')
    found, seen = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = osp.realpath(root)
        if real in seen:  # a link back up the tree, or a second link to one folder
            dirs[:] = []
            continue
        seen.add(real)
        found += [osp.join(root, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def gallery_files(images: Union[str, Sequence[str]]) -> Tuple[List[str], List[str]]:
    """Names and real paths of a gallery given as a folder (searched recursively, names relative
    to it) or a list of image paths (names = the paths), each file once; an empty one is an
    error."""
    if isinstance(images, str):
        paths = list_images(images)
        names = [osp.relpath(p, images) for p in paths]
    else:
        paths = [str(p) for p in images]
        names = list(paths)
    names, paths = unique_files(names, paths)
    if not paths:
        raise ValueError(f'empty gallery: no images found in {images!r}')
    return names, paths


def unreadable_gallery(failures: dict, total: int) -> OSError:
    """The error listing every gallery file that cannot be read (path -> why)."""
    listing = '\n'.join(f'  {p}: {why}' for p, why in sorted(failures.items()))
    return OSError(f'{len(failures)} of {total} gallery files cannot be read:\n{listing}\n'
                   '(skip_unreadable=True leaves them out, listed)')


def unique_files(names: List[str], paths: List[str]):
    """Names and real paths with each file once (the first name kept)."""
    seen, kept_names, kept_paths = set(), [], []
    for name, path in zip(names, paths):
        real = osp.realpath(path)
        if real not in seen:
            seen.add(real)
            kept_names.append(name)
            kept_paths.append(real)
    return kept_names, kept_paths


def index_problems(paths: Sequence, stamps: Sequence) -> List[str]:
    """What is wrong with the files a saved index names: one line per file."""
    if not (isinstance(paths, list) and isinstance(stamps, list) and len(paths) == len(stamps)):
        return ['paths and stamps are not two lists of one length']
    problems = []
    for path, stamp in zip(paths, stamps):
        if not (isinstance(path, str) and path.lower().endswith(IMAGE_EXTENSIONS)):
            problems.append(f'  {path!r}: not an image file name')
        elif not osp.isfile(path):
            problems.append(f'  {path}: deleted')
        elif file_stamp(path) != list(stamp):
            problems.append(f'  {path}: changed since the index was saved')
    return problems


def check_queries(images: Sequence, texts: Sequence, topk) -> None:
    """Refuse degenerate queries with a message instead of a raw error later."""
    if type(topk) is not int or topk < 1:
        raise ValueError(f'topk must be a positive int, got {topk!r}')
    if isinstance(images, (str, Image.Image)) or isinstance(texts, str):
        raise TypeError('query_batch takes a list of images and a list of texts; use query() '
                        'for one')
    if len(images) == 0:
        raise ValueError('query_batch got no queries (an empty list of images)')
    if len(images) != len(texts):
        raise ValueError(f'query_batch got {len(images)} images and {len(texts)} texts; one '
                         'text per image')


class IndexedGallery:
    """What both retrievers (PyTorch and ONNX) keep of their gallery: a
    :class:`~ssn_plugin.index.GalleryIndex` (None before indexing) and its names and paths."""

    gallery: Optional[GalleryIndex] = None

    def _require_index(self) -> GalleryIndex:
        if self.gallery is None:
            raise RuntimeError('no gallery indexed: call index() or load_index() first')
        return self.gallery

    @property
    def names(self) -> List[str]:
        """Gallery names, in index order (empty before indexing)."""
        return [] if self.gallery is None else self.gallery.names

    @property
    def paths(self) -> List[str]:
        """Real paths of the gallery files, in index order."""
        return [] if self.gallery is None else self.gallery.paths

    def path_of(self, name: str) -> str:
        """The image file of a gallery name."""
        gallery_id = self._require_index().id_of_name(name)
        if gallery_id < 0:
            raise KeyError(f'{name!r} is not in the gallery')
        return self.gallery.entry(gallery_id)[1]
