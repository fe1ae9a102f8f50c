"""The generated shapes dataset: determinism, CIRR compatibility, captions that match."""
import filecmp
import json
import os
import os.path as osp

import pytest

from ssn_plugin.datasets import CIRR, ShapesCIRR, apply_instruction, generate_shapes_dataset
from ssn_plugin.datasets.shapes import INSTRUCTION_TYPES

SMALL = dict(num_train_sets=20, num_val_sets=10, queries_per_set=2, image_size=32)


@pytest.fixture(scope='module')
def shapes_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('shapes') / 'data')
    counts = generate_shapes_dataset(root, seed=3, **SMALL)
    assert counts == dict(train_triplets=40, train_images=120, val_triplets=20, val_images=60)
    return root


def test_deterministic(tmp_path, shapes_root):
    again = str(tmp_path / 'again')
    generate_shapes_dataset(again, seed=3, **SMALL)
    for rel in ('cirr/captions/cap.rc2.val.json', 'cirr/image_splits/split.rc2.train.json',
                'shapes_scenes.json', 'dev/dev-4-2-img0.png', 'images/train/7/train-7-1-img0.png'):
        assert filecmp.cmp(osp.join(shapes_root, rel), osp.join(again, rel), shallow=False), rel
    other = str(tmp_path / 'other')
    generate_shapes_dataset(other, seed=4, **SMALL)
    assert not filecmp.cmp(osp.join(shapes_root, 'shapes_scenes.json'),
                           osp.join(other, 'shapes_scenes.json'), shallow=False)


def test_cirr_loader_reads_it_unchanged(shapes_root):
    for split, count in (('train', 40), ('val', 20)):
        dataset = CIRR(shapes_root, split)  # checks every referenced image exists
        assert len(dataset) == count and len(dataset.gallery) == 3 * count
    grouped = CIRR(shapes_root, 'val', group_key='instruction_type')
    groups = {grouped.get_data_info(i)['group'] for i in range(len(grouped))}
    assert groups <= set(INSTRUCTION_TYPES) and len(groups) >= 3


def test_captions_turn_reference_into_target(shapes_root):
    scenes = json.load(open(osp.join(shapes_root, 'shapes_scenes.json')))
    as_scene = lambda name: tuple(tuple(o) for o in scenes[name])  # noqa: E731
    for split in ('train', 'val'):
        records = json.load(open(osp.join(shapes_root, 'cirr', 'captions',
                                          f'cap.rc2.{split}.json')))
        gallery = json.load(open(osp.join(shapes_root, 'cirr', 'image_splits',
                                          f'split.rc2.{split}.json')))
        for record in records:
            ref, tgt = as_scene(record['reference']), as_scene(record['target_hard'])
            assert apply_instruction(ref, record['caption']) == tgt, record['caption']
            members = record['img_set']['members']
            assert len(set(members)) == 6 and set(members) <= set(gallery)
            assert record['reference'] in members and record['target_hard'] in members
            # The other members are distinct near-duplicates of the reference.
            assert len({as_scene(m) for m in members}) == 6


def test_shapes_dataset_generates_on_first_use(tmp_path):
    root = str(tmp_path / 'fresh')
    dataset = ShapesCIRR(root, 'val', generator=dict(seed=1, **SMALL))
    assert len(dataset) == 20 and osp.isdir(osp.join(root, 'dev'))
    assert not [n for n in os.listdir(tmp_path) if n.startswith('.shapes_tmp_')]
    mtime = os.path.getmtime(osp.join(root, 'shapes_scenes.json'))
    ShapesCIRR(root, 'train', generator=dict(seed=1, **SMALL))  # reuses the files
    assert os.path.getmtime(osp.join(root, 'shapes_scenes.json')) == mtime
