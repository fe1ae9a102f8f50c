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


# ---------------------------------------------------------------- the hard variant
@pytest.fixture(scope='module')
def hard_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('shapes_hard') / 'data')
    counts = generate_shapes_dataset(root, seed=5, difficulty='hard', **SMALL)
    assert counts == dict(train_triplets=40, train_images=120, val_triplets=20, val_images=60)
    return root


def hard_records(root, split='val'):
    scenes = json.load(open(osp.join(root, 'shapes_scenes.json')))
    records = json.load(open(osp.join(root, 'cirr', 'captions', f'cap.rc2.{split}.json')))
    return {name: tuple(tuple(o) for o in scene) for name, scene in scenes.items()}, records


def test_hard_sets_are_one_family_of_near_misses(hard_root):
    from ssn_plugin.datasets.shapes_hard import HARD_FAMILIES
    scenes, records = hard_records(hard_root)
    families = set()
    for record in records:
        ref, tgt = scenes[record['reference']], scenes[record['target_hard']]
        assert apply_instruction(ref, record['caption']) == tgt, record['caption']
        assert 4 <= len(ref) <= 5
        family = record['instruction_type']
        families.add(family)
        assert family in HARD_FAMILIES
        assert record['caption'].count(' and ') == family.count('+')
        members = [scenes[m] for m in record['img_set']['members']]
        assert len(set(members)) == 6
        # Every non-reference member differs from the reference as much as the target does
        # (the same number of objects changed): the image alone cannot pick the target.
        changed = lambda s: len(set(s) ^ set(ref))  # noqa: E731
        others = [m for m in members if m != ref]
        assert len({changed(m) for m in others}) <= 2
    assert len(families) >= 3
    with pytest.raises(ValueError, match="difficulty must be one of"):
        generate_shapes_dataset(str(hard_root) + '_x', difficulty='extreme', **SMALL)


def satisfies(scene, caption):
    """What a caption says of its result, checked on a scene without its reference: a removed
    object is absent (unless a later part makes one of that name again), a changed one present
    with its new colour, shape or size."""
    parts = [part.split() for part in caption.split(' and ')]

    def made(words):  # the (shape, colour) a part leaves in the scene
        if words[0] == 'turn':
            return words[-1], words[2]
        if words[0] == 'make' and words[-1] not in ('small', 'large'):
            return words[3], words[-1]
        return None

    objects = {(o[0], o[1], o[2]) for o in scene}
    for i, words in enumerate(parts):
        colour, shape = words[2], words[3]
        if words[0] == 'remove':
            if (shape, colour) in {made(w) for w in parts[i + 1:]}:
                continue
            ok = not any(o[:2] == (shape, colour) for o in objects)
        elif words[-1] in ('small', 'large'):
            ok = any(o == (shape, colour, words[-1]) for o in objects)
        else:
            ok = any(o[:2] == made(words) for o in objects)
        if not ok:
            return False
    return True


def test_hard_sets_need_both_the_image_and_the_text(hard_root):
    """Oracle scorers on the true scenes. Ignoring the text: among the img_set, the members
    closest to the reference (fewest objects changed) are all equally close, so the target is
    a draw among ties. Ignoring the reference: in the gallery, every image that shows what the
    caption asks for is as good as the target. Both are far below applying the caption to the
    reference, which finds the target every time (the first test)."""
    scenes, records = hard_records(hard_root)
    gallery = list(scenes)
    image_only = text_only = 0.0
    for record in records:
        ref = scenes[record['reference']]
        members = [m for m in record['img_set']['members'] if m != record['reference']]
        distance = {m: len(set(scenes[m]) ^ set(ref)) for m in members}
        tied = [m for m in members if distance[m] == min(distance.values())]
        image_only += (record['target_hard'] in tied) / len(tied)
        fits = [g for g in gallery if g != record['reference'] and
                g.startswith('dev') and satisfies(scenes[g], record['caption'])]
        assert record['target_hard'] in fits
        text_only += 1 / len(fits)
    image_only, text_only = image_only / len(records), text_only / len(records)
    print(f'expected Recall@1: image only {image_only:.2f} (img_set), '
          f'text only {text_only:.2f} (gallery of 60)')
    assert image_only <= 0.3 and text_only <= 0.3
