"""BaseCIRDataset owns the bookkeeping: a dataset that writes only its reading, its record
images and its items gets the split check, the image check, the gallery, the counted drops,
``has_targets`` and ``prepare_for_model``."""
import os
import os.path as osp

import pytest

from helpers import QUERY_PIPELINE, write_image
from ssn_plugin.datasets import BaseCIRDataset, CLIPResizeCrop, MissingImages

PIPELINE = [dict(t, size=None) if t['type'] == 'CLIPResizeCrop' else t for t in QUERY_PIPELINE]


class TinyTriplets(BaseCIRDataset):
    """Triplets ``(id, reference, target)`` over images ``img<i>.png`` in ``data_root``."""

    NAME, REPORT_NAME = 'Tiny', 'tiny'
    SPLITS, UNLABELLED_SPLITS = ('train', 'val', 'test'), ('test', )
    RECORD_ID = 'id'

    def read_annotations(self):
        paths = {f'img{i}': osp.join(self.data_root, f'img{i}.png') for i in range(6)}
        records = [dict(id=10 + i, reference=f'img{i}', target=f'img{i + 1}') for i in range(4)]
        return records, paths

    def record_images(self, record):
        return [record['reference'], record['target']] if self.has_targets else [
            record['reference']]

    def make_item(self, record, paths, index):
        target = record['target'] if self.has_targets else None
        return dict(id=record['id'], text='make it red', ref_name=record['reference'],
                    ref_img_path=paths[record['reference']], ref_index=index[record['reference']],
                    tgt_name=target, tgt_img_path=paths[target] if target else None,
                    target_index=index[target] if target else -1)


@pytest.fixture
def root(tmp_path):
    for i in range(6):
        write_image(str(tmp_path / 'data' / f'img{i}.png'), seed=i)
    return str(tmp_path / 'data')


def test_a_complete_dataset_indexes_its_gallery(root):
    dataset = TinyTriplets(root, 'val', pipeline=PIPELINE, report_dir=root)
    assert dataset.gallery_names == [f'img{i}' for i in range(6)]
    assert [dataset.get_data_info(i)['target_index'] for i in range(4)] == [1, 2, 3, 4]
    assert dataset.has_targets and dataset.dropped_ids == []
    assert dataset.metainfo['split'] == 'val'


def test_the_split_is_checked_before_anything_is_read(root):
    with pytest.raises(ValueError, match=r"Unknown Tiny split 'dev': expected one of "
                                         r"\('train', 'val', 'test'\)"):
        TinyTriplets(root, 'dev')


def test_an_unlabelled_split_has_no_targets(root):
    dataset = TinyTriplets(root, 'test', pipeline=PIPELINE)
    assert not dataset.has_targets
    assert {dataset.get_data_info(i)['target_index'] for i in range(4)} == {-1}


def test_a_missing_image_stops_with_the_list_or_is_dropped_and_counted(root):
    os.remove(osp.join(root, 'img2.png'))
    with pytest.raises(MissingImages, match=r'Tiny val: 1 of 6 referenced images are missing'):
        TinyTriplets(root, 'val', report_dir=root)
    with open(osp.join(root, 'missing_images_tiny_val.txt')) as f:
        assert f.read().split('\t')[:2] == ['val', 'img2']
    dataset = TinyTriplets(root, 'val', skip_missing=True, report_dir=root)
    assert 'img2' not in dataset.gallery_names and len(dataset.gallery) == 5
    # img2 is the target of record 11 and the reference of record 12.
    assert dataset.dropped_ids == [11, 12]
    assert [dataset.get_data_info(i)['id'] for i in range(len(dataset))] == [10, 13]


def test_training_checks_only_the_images_its_records_use(root):
    os.remove(osp.join(root, 'img5.png'))  # in the gallery, used by no record
    dataset = TinyTriplets(root, 'train', report_dir=root)
    assert len(dataset) == 4
    with pytest.raises(MissingImages, match='1 of 6'):
        TinyTriplets(root, 'val', report_dir=root)


def test_prepare_for_model_fills_the_size_of_both_pipelines(root):
    dataset = TinyTriplets(root, 'val', pipeline=PIPELINE, gallery_pipeline=PIPELINE)
    assert dataset.prepare_for_model((48, 48)) == (2, 0)  # two resize steps, no image cache
    sizes = [t.size for t in dataset.pipeline.transforms + dataset.gallery_pipeline
             if isinstance(t, CLIPResizeCrop)]
    assert sizes == [48, 48]
    assert dataset.prepare_for_model((64, 64)) == (0, 0)  # filled sizes are kept
