"""Fashion-IQ: triplets and per-category galleries, with honest handling of missing images."""
import os.path as osp
from typing import Dict, List, Optional, Sequence

from mmengine.logging import print_log

from ssn_plugin.registry import DATASETS
from .base import BaseCIRDataset, check_record, load_json

FIQ_LAYOUT = """\
    data_root/
    ├── captions/cap.{dress,shirt,toptee}.{train,val,test}.json
    ├── image_splits/split.{dress,shirt,toptee}.{train,val,test}.json
    └── images/<ASIN>.png"""

GALLERY_PROTOCOLS = ('original', 'val-split')


@DATASETS.register_module()
class FashionIQ(BaseCIRDataset):
    """Fashion-IQ triplets (dress, shirt, toptee), read from the official files as they are.

    Expected layout (``img_dir`` and ``img_ext`` change the image part; other public copies
    use ``.jpg``)::

        data_root/
        ├── captions/cap.{dress,shirt,toptee}.{train,val,test}.json
        ├── image_splits/split.{dress,shirt,toptee}.{train,val,test}.json
        └── images/<ASIN>.png

    Items hold the two raw captions (``captions``); :class:`ComposeFIQCaption` in the pipeline
    builds ``text`` (random forms for training, "c1 and c2" for evaluation). Each item also
    carries ``category`` and the half-open range ``gallery_range`` of its category's gallery in
    :attr:`gallery`, which is the concatenation of the categories' galleries in ``categories``
    order: each query is ranked against its own category only.

    Gallery protocols: ``'original'`` (CLIP4Cir/SSN): every image of
    ``split.<cat>.<split>.json``; ``'val-split'``: only the images that occur in the split's
    triplets (as candidate or target), used by some later papers.

    Missing images: the image files are checked when the annotations load (train: the images
    the triplets use; val/test: the whole gallery). By default a
    missing file stops with the count per category and the full list written to
    ``missing_images_fashioniq_<split>.txt`` in ``report_dir``; with ``skip_missing=True``
    the affected triplets and gallery images are dropped and counted (see
    :attr:`missing_summary`).

    Args:
        data_root (str): The dataset root.
        split (str): One of ``'train'``, ``'val'``, ``'test'``.
        categories (Sequence[str]): Categories to load (pooled for training). Defaults to
            ``('dress', 'shirt', 'toptee')``.
        pipeline (list): Transforms of a triplet/query item.
        gallery_pipeline (list, optional): Transforms of a gallery image. Defaults to None.
        gallery_protocol (str): ``'original'`` or ``'val-split'``. Defaults to 'original'.
        img_dir (str): Image folder under ``data_root``. Defaults to 'images'.
        img_ext (str): Image file extension. Defaults to '.png'.
        skip_missing (bool): Drop what misses images instead of raising. Defaults to False.
        check_images (bool): Check image files at load time. Defaults to True.
        report_dir (str, optional): Where the missing-image list goes; None = the current
            run's log directory in the work dir (or the working directory outside a run).
        **kwargs: Passed to ``BaseDataset``.

    Examples:
        >>> from ssn_plugin.datasets import FashionIQ
        >>> val = FashionIQ('data/fashion-iq', 'val', categories=('dress', 'shirt'))
        >>> info = val.get_data_info(0)
        >>> info['category'], len(info['captions'])
        ('dress', 2)
        >>> start, stop = info['gallery_range']  # the query's own category gallery
        >>> start <= info['target_index'] < stop
        True
        >>> {c: s['gallery'] for c, s in val.missing_summary.items()} == {
        ...     c: sum(g['group'] == c for g in val.gallery) for c in ('dress', 'shirt')}
        True
    """

    NAME = 'Fashion-IQ'
    REPORT_NAME = 'fashioniq'
    SPLITS = ('train', 'val', 'test')
    UNLABELLED_SPLITS = ('test', )
    CATEGORIES = ('dress', 'shirt', 'toptee')
    LAYOUT = FIQ_LAYOUT
    SOURCE = ('annotations: https://github.com/XiaoxiaoGuo/fashion-iq; images: a community '
              'copy (about 3,300 of the 77,684 original URLs are dead); docs/data.md')
    METAINFO_KEYS = ('categories', 'gallery_protocol')
    META_KEYS = BaseCIRDataset.META_KEYS + ('category', 'gallery_range')

    def __init__(self,
                 data_root: str,
                 split: str,
                 categories: Sequence[str] = CATEGORIES,
                 pipeline: Sequence = (),
                 gallery_pipeline: Optional[Sequence] = None,
                 gallery_protocol: str = 'original',
                 img_dir: str = 'images',
                 img_ext: str = '.png',
                 skip_missing: bool = False,
                 check_images: bool = True,
                 report_dir: Optional[str] = None,
                 **kwargs):
        unknown = [c for c in categories if c not in self.CATEGORIES]
        if unknown or not categories:
            raise ValueError(f'Unknown Fashion-IQ categories {unknown or categories}: expected '
                             f'a non-empty subset of {self.CATEGORIES}.')
        if gallery_protocol not in GALLERY_PROTOCOLS:
            raise ValueError(f'Unknown gallery_protocol {gallery_protocol!r}: expected one of '
                             f'{GALLERY_PROTOCOLS}.')
        self.categories = tuple(categories)
        self.gallery_protocol = gallery_protocol
        self.img_dir = img_dir
        self.img_ext = img_ext
        self.missing_summary: Dict[str, dict] = {}
        super().__init__(data_root=data_root, split=split, pipeline=pipeline,
                         gallery_pipeline=gallery_pipeline, skip_missing=skip_missing,
                         check_images=check_images, report_dir=report_dir, **kwargs)

    def caption_file(self, category: str) -> str:
        return osp.join(self.data_root, 'captions', f'cap.{category}.{self.split}.json')

    def split_file(self, category: str) -> str:
        return osp.join(self.data_root, 'image_splits', f'split.{category}.{self.split}.json')

    def image_path(self, asin: str) -> str:
        return osp.join(self.data_root, self.img_dir, asin + self.img_ext)

    def _read_category(self, category: str):
        caption_file = self.caption_file(category)
        records = load_json(caption_file, FIQ_LAYOUT)
        split = load_json(self.split_file(category), FIQ_LAYOUT)
        if not isinstance(records, list):
            raise ValueError(f'{caption_file}: expected a list of records')
        if not (isinstance(split, list) and all(isinstance(a, str) for a in split)):
            raise ValueError(f'{self.split_file(category)}: expected a list of image ids')
        required = dict(candidate=str, captions=list)
        if self.has_targets:
            required['target'] = str
        in_split = set(split)
        for i, record in enumerate(records):
            where = f'{caption_file}, record {i}'
            check_record(record, required, where, self.split)
            caps = record['captions']
            if not (isinstance(caps, list) and len(caps) == 2
                    and all(isinstance(c, str) for c in caps)):
                raise ValueError(f'{where}: captions should be a list of 2 strings, got '
                                 f'{caps!r}')
            for key in ('candidate', 'target'):
                if key in required and record[key] not in in_split:
                    raise ValueError(f'{where}: {key} {record[key]!r} is not in '
                                     f'{self.split_file(category)}')
        return records, split

    def record_images(self, record: dict) -> List[str]:
        """The candidate and (with targets) the target of a record."""
        return [record['candidate'], record['target']] if self.has_targets else [
            record['candidate']]

    def load_data_list(self) -> List[dict]:
        """Per category: read, check the images, append its gallery, make its items."""
        per_category = {c: self._read_category(c) for c in self.categories}
        missing = self.find_missing_images({
            c: self.images_to_check(records, {a: self.image_path(a) for a in split})
            for c, (records, split) in per_category.items()})
        data_list = []
        for category, (records, split) in per_category.items():
            data_list += self._category_items(category, records, split,
                                              missing.get(category, {}))
        if any(m['dropped_queries'] or m['missing_images'] for m in self.missing_summary.values()):
            print_log(f'Fashion-IQ {self.split} after dropping missing images: '
                      f'{self.missing_summary}', logger='current')
        return data_list

    def _category_items(self, category: str, records: List[dict], split: List[str],
                        lost: Dict[str, str]) -> List[dict]:
        """Append the category's gallery to :attr:`gallery`; return its query items."""
        if self.gallery_protocol == 'val-split':
            used = {r['candidate'] for r in records} | {r.get('target') for r in records}
            split = [a for a in split if a in used]
        start = len(self.gallery)
        index = self.add_to_gallery({a: self.image_path(a) for a in split}, lost, category)
        items = []
        for i in self.complete_indices(records, lost):
            record = records[i]
            target = record['target'] if self.has_targets else None
            items.append(dict(
                category=category,
                record_idx=i,
                captions=list(record['captions']),
                ref_name=record['candidate'],
                ref_img_path=self.image_path(record['candidate']),
                ref_index=index[record['candidate']],
                tgt_name=target,
                tgt_img_path=self.image_path(target) if target else None,
                target_index=index[target] if target else -1,
                gallery_range=(start, len(self.gallery))))
        self.missing_summary[category] = dict(
            queries=len(items), dropped_queries=len(records) - len(items),
            gallery=len(index), missing_images=len(lost))
        return items
