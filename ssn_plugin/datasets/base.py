"""Shared machinery of the composed-image-retrieval datasets."""
import json
import os.path as osp
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from mmengine.dataset import BaseDataset
from mmengine.logging import print_log

from ssn_plugin.registry import DATASETS, TRANSFORMS


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


class MissingImages(FileNotFoundError):
    """Raised when images referenced by the annotations are absent."""


def report_missing(missing: Dict[str, str], total: int, what: str, layout: str,
                   skip_missing: bool, report_file: Optional[str] = None) -> None:
    """Raise on missing images, or log the count (and write the list) when skipping.

    Args:
        missing (dict): Image name -> expected path, for every missing image.
        total (int): Number of distinct images the annotations reference.
        what (str): Which dataset/split, for the messages.
        layout (str): The expected directory layout, shown in the error.
        skip_missing (bool): Log and continue instead of raising.
        report_file (str, optional): Where to write the full list (one ``name<TAB>path`` per
            line). Defaults to None (the list goes to the log only).
    """
    if not missing:
        return
    listing = '\n'.join(f'{name}\t{path}' for name, path in sorted(missing.items()))
    if report_file is not None:
        with open(report_file, 'w') as f:
            f.write(listing + '\n')
    examples = ', '.join(sorted(missing.values())[:5])
    where = f' (full list in {report_file})' if report_file else ''
    if not skip_missing:
        raise MissingImages(
            f'{what}: {len(missing)} of {total} referenced images are missing{where}, e.g. '
            f'{examples}.\nExpected layout:\n{layout}\nPass skip_missing=True to drop the '
            'affected samples and gallery images (counted in the log).')
    print_log(f'{what}: skip_missing=True, {len(missing)} of {total} referenced images are '
              f'missing{where}:\n{listing}', logger='current')


@DATASETS.register_module()
class CIRGalleryDataset(BaseDataset):
    """The gallery of a CIR dataset: one item per gallery image.

    Built by :meth:`BaseCIRDataset.gallery_dataset`; items are
    ``dict(img_path, name, gallery_idx, group)``, in the gallery order of the query dataset.

    Args:
        items (list[dict]): The gallery items.
        pipeline (list): Transforms; typically ``LoadCIRImages(keys=('img',))``, the image
            transforms and ``PackCIRInputs``.
    """

    def __init__(self, items: List[dict], pipeline: Sequence = ()):
        self._items = items
        super().__init__(pipeline=build_pipeline(pipeline), serialize_data=False,
                         test_mode=True)

    def load_data_list(self) -> List[dict]:
        return [dict(item) for item in self._items]


class BaseCIRDataset(BaseDataset):
    """Base of the CIR datasets: queries/triplets plus an indexed gallery.

    Every item is a plain dict with ``text``, ``ref_img_path``, ``tgt_img_path`` (None when
    the target is unknown), ``ref_idx``/``tgt_idx`` (indices into :attr:`gallery`, -1 when
    unknown) and dataset-specific keys; the pipeline decides which images to load. Subclasses
    fill :attr:`gallery` (list of dicts ``name``, ``img_path``, ``group``) and return items
    from :meth:`load_data_list`.

    Args:
        gallery_pipeline (list, optional): Pipeline of the gallery dataset used at evaluation
            (transform configs or built transforms; built once here). Defaults to None (then
            :meth:`gallery_dataset` needs one).
        **kwargs: Passed to ``BaseDataset``.
    """

    LAYOUT = ''

    def __init__(self, pipeline: Sequence = (), gallery_pipeline: Optional[Sequence] = None,
                 **kwargs):
        self.gallery: List[dict] = []
        # Built once, so that settings filled in later (the model's image size) are kept.
        self.gallery_pipeline = (None if gallery_pipeline is None else
                                 build_pipeline(gallery_pipeline))
        super().__init__(pipeline=build_pipeline(pipeline), **kwargs)

    def gallery_dataset(self, pipeline: Optional[Sequence] = None) -> CIRGalleryDataset:
        """The gallery images as a dataset, in :attr:`gallery` order."""
        pipeline = self.gallery_pipeline if pipeline is None else pipeline
        if pipeline is None:
            raise ValueError(f'{type(self).__name__} has no gallery_pipeline; set it in the '
                             'dataset config to evaluate retrieval.')
        items = [dict(entry, gallery_idx=i) for i, entry in enumerate(self.gallery)]
        return CIRGalleryDataset(items, pipeline)

    @property
    def gallery_names(self) -> List[str]:
        return [entry['name'] for entry in self.gallery]
