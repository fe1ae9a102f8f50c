"""Your own (reference, caption, target) triplets: one JSON object (or CSV row) a line."""
import csv
import json
import os.path as osp
import random
from typing import Dict, List, Optional, Sequence, Tuple

from ssn_plugin.registry import DATASETS
from .base import BaseCIRDataset

CUSTOM_LAYOUT = """\
    data_root/
    ├── train.jsonl     one triplet a line:
    │                   {"reference": "shoes/a.jpg", "caption": "in red", "target": "shoes/b.jpg"}
    ├── val.jsonl       the same; optional "id" (unique string) and "group" (per-group recall)
    ├── gallery.txt     optional: extra gallery images (distractors), one relative path a line
    └── images/         the files the paths point to (any subfolders)
    (train.csv / val.csv with the same column names are accepted instead)"""


@DATASETS.register_module()
class CustomCIRDataset(BaseCIRDataset):
    """Composed-retrieval triplets of your own, in a folder of this layout::

        data_root/
        ├── train.jsonl     one triplet a line:
        │     {"reference": "shoes/a.jpg", "caption": "in red", "target": "shoes/b.jpg"}
        ├── val.jsonl       the same; optional "id" (any string, unique) and "group"
        ├── gallery.txt     optional: extra gallery images (distractors), one path a line
        └── images/         the files the paths point to (any subfolders)

    * ``reference`` and ``target`` are paths relative to ``images/``; they name the gallery
      images (``shoes/a.jpg``). A path that leaves ``images/`` (``../x.jpg``, ``/abs/x.jpg``)
      is refused.
    * ``caption`` is a string or a list of strings. Training draws one of a list at every
      step (Python's ``random``, which MMEngine seeds per worker and
      :class:`~ssn_plugin.engine.EpochSeedHook` per epoch); evaluation makes each caption a
      query of its own (``caption_index`` tells them apart).
    * ``id`` (optional, a string, unique in the file) names the record in messages, drop logs
      and exports; without it the record is named by its line (``line 7``). ``group``
      (optional, a string) gives per-group recall, as CIRR's ``group_key``.
    * ``<split>.csv`` with the columns ``reference,caption,target[,id,group]`` (a header row
      first) is read when ``<split>.jsonl`` is absent; a CSV caption is a single string.
    * The gallery of an evaluation split is every image its records name (in the order they
      first appear) followed by the images of ``gallery.txt`` not named by a record; training
      uses the images its records name. With ``exclude_reference`` (the default, as CIRR) the
      reference is left out of its own ranking.

    Every record is checked when the file loads; a problem is an error naming the file, the
    line (1-based, as an editor shows it) and what was expected: a line that is not JSON, a
    missing or empty key, a wrong type, a repeated ``id``, a target equal to its reference, a
    path leaving ``images/``. Missing or unreadable images go through the report of every
    dataset (the full list in ``missing_images_custom_<split>.txt``; ``skip_missing`` drops
    the affected records with a count).

    Items are CIRR's without its ``img_set``: ``text``, ``ref_img_path``, ``tgt_img_path``,
    ``ref_index``, ``target_index``, ``ref_name``, ``tgt_name``, plus ``id``, ``line``,
    ``caption_index`` and ``group``. :class:`~ssn_plugin.evaluation.TripletRecallMetric`
    reports Recall@{1,5,10,50} (and per group) through the ranking code of CIRR.

    Args:
        data_root (str): The folder above.
        split (str): ``'train'``, ``'val'`` or ``'test'``; the file read is ``<split>.jsonl``
            (or ``.csv``) unless ``ann_file`` is given.
        pipeline (list): Transforms of a query/triplet item.
        gallery_pipeline (list, optional): Transforms of a gallery image. Defaults to None.
        ann_file (str, optional): The triplet file, relative to ``data_root`` or absolute.
            Defaults to None (``<split>.jsonl``, else ``<split>.csv``).
        img_prefix (str): The image folder under ``data_root``. Defaults to 'images'.
        gallery_file (str, optional): Extra gallery images of the evaluation splits, relative
            to ``data_root``; used when the file exists. None: no extras. Defaults to
            'gallery.txt'.
        exclude_reference (bool): Leave the reference out of its own ranking. Defaults to
            True.
        **kwargs: Passed to :class:`BaseCIRDataset` (``skip_missing``, ``check_images``,
            ``decode_images``, ``report_dir``, ``image_cache``, ...) and ``BaseDataset``.

    Examples:
        >>> from ssn_plugin.datasets import CustomCIRDataset
        >>> val = CustomCIRDataset('data/my_triplets', 'val')  # doctest: +SKIP
        >>> val.get_data_info(0)['tgt_name']  # doctest: +SKIP
        'shoes/b.jpg'
    """

    NAME = 'Custom triplets'
    REPORT_NAME = 'custom'
    SPLITS = ('train', 'val', 'test')
    LAYOUT = CUSTOM_LAYOUT
    SOURCE = 'your own files in the layout above (docs/data.md, "Your own triplets")'
    RECORDS = 'triplets'
    RECORD_ID = 'id'
    METAINFO_KEYS = ('exclude_reference', )
    META_KEYS = BaseCIRDataset.META_KEYS + ('id', 'line', 'caption_index', 'group')
    KEYS = ('reference', 'caption', 'target')
    OPTIONAL = ('id', 'group')

    def __init__(self,
                 data_root: str,
                 split: str,
                 pipeline: Sequence = (),
                 gallery_pipeline: Optional[Sequence] = None,
                 ann_file: Optional[str] = None,
                 img_prefix: str = 'images',
                 gallery_file: Optional[str] = 'gallery.txt',
                 exclude_reference: bool = True,
                 **kwargs):
        self.img_prefix = img_prefix
        self.image_root = osp.join(data_root, img_prefix)
        self.gallery_file = gallery_file
        self.exclude_reference = exclude_reference
        self._ann_file_arg = ann_file
        super().__init__(data_root=data_root, split=split, pipeline=pipeline,
                         gallery_pipeline=gallery_pipeline, **kwargs)

    # ------------------------------------------------------------------ reading
    @property
    def triplet_file(self) -> str:
        """The file this split reads."""
        if self._ann_file_arg is not None:
            return osp.join(self.data_root, self._ann_file_arg)
        jsonl = osp.join(self.data_root, f'{self.split}.jsonl')
        csv_file = osp.join(self.data_root, f'{self.split}.csv')
        return csv_file if not osp.isfile(jsonl) and osp.isfile(csv_file) else jsonl

    def read_annotations(self) -> Tuple[List[dict], Dict[str, str]]:
        path = self.triplet_file
        if not osp.isfile(path):
            raise FileNotFoundError(f'triplet file not found: {path}\nExpected layout:\n'
                                    f'{CUSTOM_LAYOUT}')
        rows = read_csv_rows(path) if path.endswith('.csv') else read_jsonl_rows(path)
        records, seen_ids = [], {}
        for line, row in rows:
            record = self._checked(row, f'{path}, line {line}')
            if 'id' in record:
                if record['id'] in seen_ids:
                    raise ValueError(f'{path}, line {line}: id {record["id"]!r} is already '
                                     f'used on line {seen_ids[record["id"]]}; ids must be '
                                     'unique')
                seen_ids[record['id']] = line
            else:
                record['id'] = f'line {line}'
            record['line'] = line
            records.append(record)
        if not records:
            raise ValueError(f'{path}: no triplets (an empty file)')
        names = [name for record in records for name in (record['reference'],
                                                        record['target'])]
        if self.split != 'train':
            names += self.read_gallery_file()
        paths = {name: osp.normpath(osp.join(self.image_root, name))
                 for name in dict.fromkeys(names)}
        return self._expanded(records), paths

    def _checked(self, row, where: str) -> dict:
        """The record of one line, its paths normalised; an error names ``where``."""
        if not isinstance(row, dict):
            raise ValueError(f'{where}: expected a JSON object with {list(self.KEYS)}, got '
                             f'{type(row).__name__}')
        record = {}
        for key in self.KEYS + self.OPTIONAL:
            if key not in row:
                if key in self.OPTIONAL:
                    continue
                raise ValueError(f'{where}: missing key {key!r}; a triplet needs '
                                 f'{list(self.KEYS)} (optional: {list(self.OPTIONAL)})')
            value = row[key]
            if key == 'caption' and isinstance(value, list):
                if not value or not all(isinstance(c, str) and c.strip() for c in value):
                    raise ValueError(f'{where}: "caption" should be a non-empty string or a '
                                     f'non-empty list of non-empty strings, got {value!r}')
            elif not isinstance(value, str):
                raise ValueError(f'{where}: {key!r} should be a string, got '
                                 f'{type(value).__name__} ({value!r})')
            elif not value.strip():
                raise ValueError(f'{where}: {key!r} is empty')
            record[key] = value
        for key in ('reference', 'target'):
            record[key] = self._relative(record[key], where, key)
        if record['target'] == record['reference']:
            raise ValueError(f'{where}: the target is the reference image '
                             f'{record["reference"]!r}; a query must ask for another image')
        return record

    def _relative(self, path: str, where: str, key: str) -> str:
        """``path`` normalised, refused when it leaves the image folder."""
        norm = osp.normpath(path.replace('\\', '/'))
        if osp.isabs(path) or norm == '..' or norm.startswith('../') or norm == '.':
            raise ValueError(f'{where}: {key!r} is {path!r}, which leaves {self.img_prefix}/; '
                             f'paths are relative to {self.image_root}')
        return norm

    def read_gallery_file(self) -> List[str]:
        """The extra gallery images of ``gallery_file`` (none when it is absent)."""
        if self.gallery_file is None:
            return []
        path = osp.join(self.data_root, self.gallery_file)
        if not osp.isfile(path):
            return []
        names, seen = [], {}
        with open(path, encoding='utf-8') as f:
            for line, text in enumerate(f, start=1):
                text = text.strip()
                if not text:
                    continue
                name = self._relative(text, f'{path}, line {line}', 'path')
                if name in seen:
                    raise ValueError(f'{path}, line {line}: {name!r} is already listed on '
                                     f'line {seen[name]}')
                seen[name] = line
                names.append(name)
        return names

    def _expanded(self, records: List[dict]) -> List[dict]:
        """On evaluation splits, a record per caption of a list (``caption_index``)."""
        out = []
        for record in records:
            captions = record['caption']
            if self.split == 'train' or isinstance(captions, str):
                out.append(dict(record, caption_index=0))
            else:
                out.extend(dict(record, caption=c, caption_index=i)
                           for i, c in enumerate(captions))
        return out

    # ------------------------------------------------------------------ items
    def record_images(self, record: dict) -> List[str]:
        return [record['reference'], record['target']]

    def make_item(self, record: dict, paths: Dict[str, str], index: Dict[str, int]) -> dict:
        ref, tgt = record['reference'], record['target']
        return dict(id=record['id'], line=record['line'], text=record['caption'],
                    caption_index=record['caption_index'], group=record.get('group'),
                    ref_name=ref, ref_img_path=paths[ref], ref_index=index[ref],
                    tgt_name=tgt, tgt_img_path=paths[tgt], target_index=index[tgt])

    def prepare_data(self, idx: int):
        """The item through the pipeline; a caption list gives one caption, drawn anew."""
        item = self.get_data_info(idx)
        if isinstance(item['text'], list):
            item['text'] = random.choice(item['text'])
        return self.pipeline(item)


def read_jsonl_rows(path: str):
    """(line number, parsed object) of each non-blank line; a line that is not JSON is an
    error naming the file and the line."""
    rows = []
    with open(path, encoding='utf-8') as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                rows.append((line, json.loads(text)))
            except (json.JSONDecodeError, RecursionError) as err:
                raise ValueError(f'{path}, line {line}: not a JSON object ({err}); each line '
                                 'holds one triplet, e.g. {"reference": "a.jpg", "caption": '
                                 '"in red", "target": "b.jpg"}') from None
    return rows


def read_csv_rows(path: str):
    """(line number, row dict) of each CSV row under the header; the columns must be the
    triplet keys."""
    with open(path, encoding='utf-8', newline='') as f:
        reader = csv.DictReader(f)
        allowed = set(CustomCIRDataset.KEYS + CustomCIRDataset.OPTIONAL)
        header = reader.fieldnames or []
        unknown = [c for c in header if c not in allowed]
        if unknown or not header:
            raise ValueError(f'{path}, line 1: the header should name the columns '
                             f'{list(CustomCIRDataset.KEYS)} (optional: '
                             f'{list(CustomCIRDataset.OPTIONAL)}), got {header}')
        rows = []
        for row in reader:
            line = reader.line_num  # the row's last line (its only one unless quoted newlines)
            if None in row:
                raise ValueError(f'{path}, line {line}: more fields than the header has')
            # A missing optional value is an absent key, not an empty string.
            rows.append((line, {k: v for k, v in row.items()
                                if v is not None and not (k in CustomCIRDataset.OPTIONAL
                                                          and v == '')}))
    return rows
