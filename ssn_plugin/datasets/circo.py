"""CIRCO (Composed Image Retrieval on Common Objects in context), val and test."""
import os.path as osp
import string
from typing import Dict, List, Optional, Sequence

from ssn_plugin.registry import DATASETS
from .base import BaseCIRDataset, check_record, is_of, load_json

CIRCO_LAYOUT = """\
    data_root/                       (the CIRCO folder)
    ├── annotations/{val,test}.json
    └── COCO2017_unlabeled/
        ├── annotations/image_info_unlabeled2017.json
        └── unlabeled2017/<file_name>        (e.g. 000000271520.jpg)"""

#: Record fields a ``text_template`` may use.
TEMPLATE_FIELDS = ('relative_caption', 'shared_concept')


def check_template(template: str) -> None:
    """A ``text_template`` may only use :data:`TEMPLATE_FIELDS` and must use the caption."""
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    unknown = sorted(fields - set(TEMPLATE_FIELDS))
    if unknown:
        raise ValueError(f'text_template {template!r} uses unknown fields {unknown}; it may use '
                         f'{list(TEMPLATE_FIELDS)}')
    if 'relative_caption' not in fields:
        raise ValueError(f'text_template {template!r} must contain {{relative_caption}}: '
                         'without it the query does not say what to change')


@DATASETS.register_module()
class CIRCO(BaseCIRDataset):
    """CIRCO queries, read from the official files, with the whole COCO 2017 unlabeled gallery.

    The layout is the dataset's own::

        data_root/                       (the CIRCO folder)
        ├── annotations/{val,test}.json
        └── COCO2017_unlabeled/
            ├── annotations/image_info_unlabeled2017.json
            └── unlabeled2017/<file_name>

    The gallery is every image listed in ``image_info_unlabeled2017.json`` (123,403), in that
    file's order; an image's ``name`` is its COCO id as a string. CIRCO has no train split.
    Each item holds ``query_id`` (the record's ``id``), ``text`` (the record formatted by
    ``text_template``), ``relative_caption``, ``shared_concept``, ``ref_img_path``,
    ``ref_index`` and, on val, ``target_index`` (the annotated target), ``gt_index`` (every
    ground truth, target first) and ``semantic_aspects``; on test ``target_index`` is -1 and
    ``gt_index`` is empty.

    Records are checked when they load (keys, types, ids present in the image-info file, the
    target among the ground truths). Missing images: the whole gallery is checked; by default a
    missing file stops with the count and the full list in ``missing_images_circo_<split>.txt``;
    with ``skip_missing=True`` missing gallery images are dropped, and so are the queries whose
    reference or any ground truth is missing (their ids are logged), because a query scored
    against a partial ground truth would give a wrong mAP.

    Args:
        data_root (str): The CIRCO folder.
        split (str): ``'val'`` or ``'test'``.
        pipeline (list): Transforms of a query item.
        gallery_pipeline (list, optional): Transforms of a gallery image. Defaults to None.
        text_template (str): How a record becomes the text the model reads, a
            ``str.format`` template over ``relative_caption`` and ``shared_concept``; the
            default is the relative caption alone. E.g.
            ``'{shared_concept}, {relative_caption}'`` adds the shared concept.
            Defaults to '{relative_caption}'.
        image_info (str, optional): The image-info file; None = the layout's. Defaults to None.
        img_dir (str, optional): The image folder; None = the layout's. Defaults to None.
        skip_missing (bool): Drop what misses images instead of raising. Defaults to False.
        check_images (bool): Check the image files when the annotations load. Defaults to True.
        **kwargs: Passed to :class:`BaseCIRDataset` (``report_dir``, ``decode_images``) and
            ``BaseDataset``.
    """

    NAME = 'CIRCO'
    REPORT_NAME = 'circo'
    SPLITS = ('val', 'test')
    UNLABELLED_SPLITS = ('test', )
    SPLIT_HINT = ' (CIRCO has no training split)'
    LAYOUT = CIRCO_LAYOUT
    SOURCE = ('annotations: https://github.com/miccunifi/CIRCO; images: COCO 2017 '
              'unlabeled (https://cocodataset.org) with image_info_unlabeled2017.json; '
              'docs/data.md')
    RECORDS = 'queries'
    RECORD_ID = 'id'
    METAINFO_KEYS = ('text_template', )
    META_KEYS = BaseCIRDataset.META_KEYS + ('query_id', 'gt_index', 'semantic_aspects',
                                            'relative_caption', 'shared_concept')
    REQUIRED = {'id': int, 'reference_img_id': int, 'relative_caption': str,
                'shared_concept': str}
    REQUIRED_VAL = {'target_img_id': int, 'gt_img_ids': list, 'semantic_aspects': list}

    def __init__(self,
                 data_root: str,
                 split: str,
                 pipeline: Sequence = (),
                 gallery_pipeline: Optional[Sequence] = None,
                 text_template: str = '{relative_caption}',
                 image_info: Optional[str] = None,
                 img_dir: Optional[str] = None,
                 skip_missing: bool = False,
                 check_images: bool = True,
                 **kwargs):
        check_template(text_template)
        self.text_template = text_template
        coco = osp.join(data_root, 'COCO2017_unlabeled')
        self.image_info = image_info or osp.join(coco, 'annotations',
                                                 'image_info_unlabeled2017.json')
        self.img_dir = self.image_root = img_dir or osp.join(coco, 'unlabeled2017')
        super().__init__(data_root=data_root, split=split, pipeline=pipeline,
                         gallery_pipeline=gallery_pipeline, skip_missing=skip_missing,
                         check_images=check_images, **kwargs)

    @property
    def dropped_query_ids(self) -> List[int]:
        """The ids of the queries dropped because their reference or a ground truth is missing
        (``skip_missing``): a query scored against part of its ground truth would give a
        wrong mAP."""
        return self.dropped_ids

    @property
    def annotation_file(self) -> str:
        return osp.join(self.data_root, 'annotations', f'{self.split}.json')

    def read_annotations(self):
        paths = self._read_image_info()
        return self._read_records(paths), paths

    def _read_image_info(self) -> Dict[str, str]:
        """Gallery name (the COCO id as a string) -> image path, in the file's order."""
        info = load_json(self.image_info, CIRCO_LAYOUT)
        images = info.get('images') if isinstance(info, dict) else None
        if not isinstance(images, list):
            raise ValueError(f'{self.image_info}: expected a JSON object with an "images" list '
                             "(COCO's image_info_unlabeled2017.json)")
        paths = {}
        for i, image in enumerate(images):
            check_record(image, {'id': int, 'file_name': str},
                         f'{self.image_info}, images[{i}]', 'image-info')
            name = str(image['id'])
            if name in paths:
                raise ValueError(f'{self.image_info}, images[{i}]: id {image["id"]} is listed '
                                 'twice')
            paths[name] = osp.join(self.img_dir, image['file_name'])
        return paths

    def _read_records(self, paths: Dict[str, str]) -> List[dict]:
        records = load_json(self.annotation_file, CIRCO_LAYOUT)
        if not isinstance(records, list):
            raise ValueError(f'{self.annotation_file}: expected a list of records, got '
                             f'{type(records).__name__}')
        required = dict(self.REQUIRED, **(self.REQUIRED_VAL if self.has_targets else {}))
        seen = set()
        for i, record in enumerate(records):
            query_id = record.get('id', '?') if isinstance(record, dict) else '?'
            where = f'{self.annotation_file}, record {i} (id {query_id})'
            check_record(record, required, where, self.split)
            if record['id'] in seen:
                raise ValueError(f'{where}: the id is used twice; the test server needs one '
                                 'list per query id')
            seen.add(record['id'])
            if self.has_targets:
                gts = record['gt_img_ids']
                if not (gts and all(is_of(g, int) for g in gts) and len(set(gts)) == len(gts)):
                    raise ValueError(f'{where}: gt_img_ids should be a non-empty list of '
                                     f'distinct image ids, got {gts!r}')
                if record['target_img_id'] not in gts:
                    raise ValueError(f'{where}: target_img_id {record["target_img_id"]} is not '
                                     'among gt_img_ids')
            unknown = [i for i in (record['reference_img_id'], *record.get('gt_img_ids', []))
                       if str(i) not in paths]
            if unknown:
                raise ValueError(f'{where}: images {unknown} are not in {self.image_info}')
        return records

    def record_images(self, record: dict) -> List[str]:
        """The reference and (on val) every ground truth of a record, as gallery names."""
        return [str(i) for i in (record['reference_img_id'], *record.get('gt_img_ids', []))]

    def make_item(self, record: dict, paths: Dict[str, str], index: Dict[str, int]) -> dict:
        ref = str(record['reference_img_id'])
        target = str(record['target_img_id']) if self.has_targets else None
        return dict(
            query_id=record['id'],
            text=self.text_template.format(relative_caption=record['relative_caption'],
                                           shared_concept=record['shared_concept']),
            relative_caption=record['relative_caption'],
            shared_concept=record['shared_concept'],
            ref_name=ref,
            ref_img_path=paths[ref],
            ref_index=index[ref],
            tgt_name=target,
            tgt_img_path=paths[target] if target else None,
            target_index=index[target] if target else -1,
            gt_index=[index[str(g)] for g in record.get('gt_img_ids', [])],
            semantic_aspects=list(record.get('semantic_aspects', [])))
