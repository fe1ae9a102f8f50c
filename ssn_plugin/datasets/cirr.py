"""CIRR (Composed Image Retrieval on Real-life images), release rc2."""
import os.path as osp
from typing import List, Optional, Sequence

from ssn_plugin.registry import DATASETS
from .base import BaseCIRDataset, check_record, load_json

CIRR_LAYOUT = """\
    data_root/
    ├── cirr/
    │   ├── captions/cap.rc2.{train,val,test1}.json
    │   └── image_splits/split.rc2.{train,val,test1}.json
    ├── dev/dev-*.png                 (val images)
    ├── test1/test1-*.png             (test1 images)
    └── images/train/<0..99>/train-*.png   (train images)"""


@DATASETS.register_module()
class CIRR(BaseCIRDataset):
    """CIRR triplets and queries, read from the official rc2 files as they are.

    The expected layout (the SSN release's; ``img_root`` overrides where the split files'
    relative paths point)::

        data_root/
        ├── cirr/
        │   ├── captions/cap.rc2.{train,val,test1}.json
        │   └── image_splits/split.rc2.{train,val,test1}.json
        ├── dev/dev-*.png                       (val)
        ├── test1/test1-*.png                   (test1)
        └── images/train/<0..99>/train-*.png    (train)

    The gallery of a split is every image of ``split.rc2.<split>.json``, in the file's order.
    Records are checked when they load: required keys and types, six ``img_set`` members,
    images known to the split file, unique pairids and a target that is not the reference;
    no image or pairid may also belong to another split whose files are present.
    Each item is a dict with ``pairid``, ``text`` (the raw caption), ``ref_img_path``,
    ``tgt_img_path`` (None for test1), ``ref_index``, ``target_index`` (-1 for test1) and
    ``subset_index`` (the six ``img_set`` members, reference included, as gallery indices), plus
    ``group`` when ``group_key`` is set. Unknown record keys are ignored.

    Args:
        data_root (str): The dataset root.
        split (str): One of ``'train'``, ``'val'``, ``'test1'``.
        pipeline (list): Transforms of a query/triplet item.
        gallery_pipeline (list, optional): Transforms of a gallery image. Defaults to None.
        img_root (str, optional): The directory the split file's paths (``./dev/...``) are
            relative to. None means ``data_root/images`` for train and ``data_root`` for
            val/test1. Defaults to None.
        skip_missing (bool): Drop triplets whose reference, target or an ``img_set`` member
            is missing, and missing gallery images, with a logged count (the full list is
            written to the report file either way), instead of raising. Defaults to False.
        check_images (bool): Check that the image files exist when the annotations load: on
            val/test1 every image of the split file (the gallery), on train the images the
            triplets use. Defaults to True.
        group_key (str, optional): A record key copied into each item as ``group``, for
            recall broken down by group. Defaults to None.
        **kwargs: Passed to :class:`BaseCIRDataset` (``report_dir``: where the list of missing
            images is written, ``missing_images_cirr_<split>.txt``, default the run's log
            folder) and ``BaseDataset`` (e.g. ``indices``, ``lazy_init``).

    Examples:
        >>> from ssn_plugin.datasets import CIRR
        >>> val = CIRR('data/cirr_dataset', 'val', pipeline=[
        ...     dict(type='LoadCIRImages', keys=('ref_img', )),
        ...     dict(type='CLIPResizeCrop', size=224, keys=('ref_img', )),
        ...     dict(type='PackCIRInputs', keys=('ref_img', ))])
        >>> info = val.get_data_info(0)  # the plain item, before the pipeline
        >>> sorted(k for k in info if k.endswith('_index'))
        ['ref_index', 'subset_index', 'target_index']
        >>> val.gallery_names[info['target_index']] == info['tgt_name']
        True
        >>> sample = val[0]  # through the pipeline: uint8 image + the declared META_KEYS
        >>> sample['inputs']['ref_img'].shape
        torch.Size([3, 224, 224])
        >>> sample['data_samples'].text == info['text']
        True
    """

    NAME = 'CIRR'
    REPORT_NAME = 'cirr'
    SPLITS = ('train', 'val', 'test1')
    UNLABELLED_SPLITS = ('test1', )
    LAYOUT = CIRR_LAYOUT
    SOURCE = ('annotations: https://github.com/Cuberick-Orion/CIRR (rc2, cirr_dataset branch); '
              'images: the NLVR2 raw images (train, dev, test1), requested from the NLVR2 '
              'authors (https://github.com/lil-lab/nlvr/tree/master/nlvr2); docs/data.md')
    RECORDS = 'triplets'
    RECORD_ID = 'pairid'
    META_KEYS = BaseCIRDataset.META_KEYS + ('pairid', 'subset_index', 'group')
    REQUIRED = {'pairid': int, 'reference': str, 'caption': str, 'img_set': dict}

    def __init__(self,
                 data_root: str,
                 split: str,
                 pipeline: Sequence = (),
                 gallery_pipeline: Optional[Sequence] = None,
                 img_root: Optional[str] = None,
                 skip_missing: bool = False,
                 check_images: bool = True,
                 group_key: Optional[str] = None,
                 **kwargs):
        if img_root is None:
            img_root = osp.join(data_root, 'images') if split == 'train' else data_root
        self.img_root = self.image_root = img_root
        self.group_key = group_key
        super().__init__(data_root=data_root, split=split, pipeline=pipeline,
                         gallery_pipeline=gallery_pipeline, skip_missing=skip_missing,
                         check_images=check_images, **kwargs)

    @property
    def dropped_pairids(self) -> List[int]:
        """The pairids of the triplets dropped for a missing image (``skip_missing``)."""
        return self.dropped_ids

    def annotation_files(self, split: str):
        """(caption file, split file) of ``split`` under this dataset's root."""
        return (osp.join(self.data_root, 'cirr', 'captions', f'cap.rc2.{split}.json'),
                osp.join(self.data_root, 'cirr', 'image_splits', f'split.rc2.{split}.json'))

    @property
    def caption_file(self) -> str:
        return self.annotation_files(self.split)[0]

    @property
    def split_file(self) -> str:
        return self.annotation_files(self.split)[1]

    def _check_record(self, i: int, record: dict) -> None:
        pairid = record.get('pairid', '?') if isinstance(record, dict) else '?'
        where = f'{self.caption_file}, record {i} (pairid {pairid})'
        required = dict(self.REQUIRED, target_hard=str) if self.has_targets else self.REQUIRED
        check_record(record, required, where, self.split)
        members = record['img_set'].get('members')
        if not (isinstance(members, list) and len(members) == 6
                and all(isinstance(m, str) for m in members)):
            raise ValueError(f'{where}: img_set.members should be a list of 6 image names, '
                             f'got {members!r}')
        if len(set(members)) != 6:
            repeated = sorted({m for m in members if members.count(m) > 1})
            raise ValueError(f'{where}: img_set.members repeats {repeated}; the six members '
                             'must differ (a repeated target would lift Recall_subset)')
        if self.group_key is not None and self.group_key not in record:
            raise ValueError(f'{where}: missing the group key {self.group_key!r}')

    def read_annotations(self):
        """The checked records and the image paths of the split file (name -> path)."""
        records = load_json(self.caption_file, CIRR_LAYOUT)
        name_to_rel = load_json(self.split_file, CIRR_LAYOUT)
        if not isinstance(records, list):
            raise ValueError(f'{self.caption_file}: expected a list of records, got '
                             f'{type(records).__name__}')
        if not isinstance(name_to_rel, dict):
            raise ValueError(f'{self.split_file}: expected a dict name -> relative path, got '
                             f'{type(name_to_rel).__name__}')
        paths = {name: osp.normpath(osp.join(self.img_root, rel))
                 for name, rel in name_to_rel.items()}
        first_record = {}
        for i, record in enumerate(records):
            self._check_record(i, record)
            where = f'{self.caption_file}, record {i} (pairid {record["pairid"]})'
            unknown = [n for n in self.record_images(record) if n not in paths]
            if unknown:
                raise ValueError(f'{where}: images {unknown} are not in {self.split_file}')
            if record['pairid'] in first_record:
                raise ValueError(f'{where}: the pairid is already used by record '
                                 f'{first_record[record["pairid"]]}; pairids must be unique '
                                 '(the test-server files hold one list per pairid)')
            first_record[record['pairid']] = i
            if self.has_targets and record['target_hard'] == record['reference']:
                raise ValueError(f'{where}: the target is the reference image '
                                 f'{record["reference"]!r}; CIRR removes the reference from '
                                 'the ranking, so this query could never be answered')
        self._check_other_splits(records, paths)
        return records, paths

    def _check_other_splits(self, records: List[dict], paths: dict) -> None:
        """No image and no pairid may belong to two splits (a leak between training and
        evaluation); the other splits' files are read when they exist."""
        pairids = {record['pairid'] for record in records}
        for other in self.SPLITS:
            if other == self.split:
                continue
            caption_file, split_file = self.annotation_files(other)
            if osp.isfile(split_file):
                shared = sorted(set(load_json(split_file, CIRR_LAYOUT)) & set(paths))
                if shared:
                    raise ValueError(f'{len(shared)} images of {self.split_file} are also in '
                                     f'{split_file}, e.g. {shared[:5]}; splits must not share '
                                     'images')
            if osp.isfile(caption_file):
                shared = sorted(pairids & {r.get('pairid') for r in
                                           load_json(caption_file, CIRR_LAYOUT)})
                if shared:
                    raise ValueError(f'{len(shared)} pairids of {self.caption_file} are also in '
                                     f'{caption_file}, e.g. {shared[:5]}; pairids must be '
                                     'unique across splits')

    def record_images(self, record: dict) -> List[str]:
        """Reference, ``img_set`` members and (with targets) the target of a record."""
        names = [record['reference'], *record['img_set']['members']]
        return names + [record['target_hard']] if self.has_targets else names

    def make_item(self, record: dict, paths: dict, index: dict) -> dict:
        target = record['target_hard'] if self.has_targets else None
        item = dict(
            pairid=record['pairid'],
            text=record['caption'],
            ref_name=record['reference'],
            ref_img_path=paths[record['reference']],
            ref_index=index[record['reference']],
            tgt_name=target,
            tgt_img_path=paths[target] if target else None,
            target_index=index[target] if target else -1,
            subset_index=[index[m] for m in record['img_set']['members']])
        if self.group_key is not None:
            item['group'] = record[self.group_key]
        return item
