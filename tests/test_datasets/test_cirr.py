"""CIRR loading on the real annotation files with stand-in images, and every bad input."""
import json
import os
import os.path as osp
import shutil

import pytest
import torch

from helpers import (GALLERY_PIPELINE, QUERY_PIPELINE, TRAIN_PIPELINE, make_tiny_cirr,
                      shared_data, write_standin_images)
from ssn_plugin.datasets import CIRR, MissingImages
from ssn_plugin.registry import DATASETS


@pytest.fixture(scope='module')
def real_cirr(tmp_path_factory):
    """The real val/test1 files, a val-schema train file, and an 8x8 image per split entry."""
    root = tmp_path_factory.mktemp('cirr_real')
    os.makedirs(root / 'cirr' / 'captions')
    shutil.copytree(shared_data('cirr', 'image_splits'), root / 'cirr' / 'image_splits')
    for split in ('val', 'test1'):
        shutil.copy(shared_data('cirr', 'captions', f'cap.rc2.{split}.json'),
                    root / 'cirr' / 'captions')
        rels = json.load(open(root / 'cirr' / 'image_splits' / f'split.rc2.{split}.json'))
        write_standin_images(str(root), rels)
    # Train captions are not distributed with the shared data: build some in the val schema.
    train_rels = json.load(open(root / 'cirr' / 'image_splits' / 'split.rc2.train.json'))
    names = list(train_rels)[:60]
    records = [dict(pairid=i, reference=names[i], target_hard=names[i + 1],
                    target_soft={names[i + 1]: 1.0}, caption=f'change {i}',
                    img_set=dict(id=i, members=names[i:i + 6], reference_rank=0,
                                 target_rank=1)) for i in range(50)]
    json.dump(records, open(root / 'cirr' / 'captions' / 'cap.rc2.train.json', 'w'))
    # The train gallery is trimmed to those images (their real paths kept).
    json.dump({n: train_rels[n] for n in names},
              open(root / 'cirr' / 'image_splits' / 'split.rc2.train.json', 'w'))
    write_standin_images(str(root), {n: train_rels[n] for n in names},
                         img_root=str(root / 'images'))
    return str(root)


def copy_tree(src, dst):
    shutil.copytree(src, dst)
    return str(dst)


def test_val_loads_completely(real_cirr):
    dataset = DATASETS.build(dict(type='CIRR', data_root=real_cirr, split='val',
                                  pipeline=QUERY_PIPELINE, gallery_pipeline=GALLERY_PIPELINE))
    assert len(dataset) == 4181
    assert len(dataset.gallery) == 2297
    names = dataset.gallery_names
    records = json.load(open(osp.join(real_cirr, 'cirr', 'captions', 'cap.rc2.val.json')))
    for i in (0, 1234, 4180):
        item, record = dataset.get_data_info(i), records[i]
        assert item['pairid'] == record['pairid']
        assert item['text'] == record['caption']
        assert names[item['ref_index']] == record['reference']
        assert names[item['target_index']] == record['target_hard']
        assert [names[j] for j in item['subset_index']] == record['img_set']['members']
        assert item['ref_img_path'].endswith(osp.join('dev', record['reference'] + '.png'))
    # Gallery order = split file order.
    split = json.load(open(osp.join(real_cirr, 'cirr', 'image_splits', 'split.rc2.val.json')))
    assert names == list(split)
    sample = dataset[0]
    assert sample['inputs']['ref_img'].shape == (3, 32, 32)
    assert sample['inputs']['ref_img'].dtype == torch.uint8
    assert sample['data_samples'].text == records[0]['caption']
    gallery = dataset.gallery_dataset()
    assert len(gallery) == 2297 and gallery[5]['data_samples'].gallery_index == 5


def test_test1_loads_for_inference(real_cirr):
    dataset = CIRR(real_cirr, 'test1', pipeline=QUERY_PIPELINE)
    assert len(dataset) == 4148 and len(dataset.gallery) == 2315
    items = {dataset.get_data_info(i)['pairid']: dataset.get_data_info(i)
             for i in range(len(dataset))}
    assert items[27098]['text'] == ' '  # the empty caption loads as it is
    assert all(it['target_index'] == -1 and it['tgt_img_path'] is None for it in items.values())
    assert dataset[0]['inputs']['ref_img'].shape == (3, 32, 32)


def test_train_layout_and_pipeline(real_cirr):
    dataset = CIRR(real_cirr, 'train', pipeline=TRAIN_PIPELINE)
    assert len(dataset) == 50
    item = dataset.get_data_info(0)
    assert osp.join('images', 'train') in item['ref_img_path']
    sample = dataset[3]
    assert set(sample['inputs']) == {'ref_img', 'tgt_img'}


def test_unknown_split(real_cirr):
    with pytest.raises(ValueError, match=r"Unknown CIRR split 'test'.*'train', 'val', 'test1'"):
        CIRR(real_cirr, 'test')


def test_missing_annotation_file_names_file_and_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'cap\.rc2\.val\.json[\s\S]*image_splits'):
        CIRR(str(tmp_path), 'val')


@pytest.mark.parametrize('mutate, message', [
    (lambda r: r.pop('caption'), r"record 3 \(pairid \d+\): missing key 'caption'"),
    (lambda r: r.update(pairid='x'), r"'pairid' should be int"),
    (lambda r: r['img_set'].update(members=['a']), 'img_set.members should be a list of 6'),
    (lambda r: r.update(reference='dev-nope'), r"images \['dev-nope'\] are not in"),
    (lambda r: r.pop('target_hard'), "missing key 'target_hard'"),
    # Issue 24: a member listed twice (the target five times lifted Rsubset@1 from 0 to 100),
    # a boolean pairid.
    (lambda r: r['img_set'].update(members=[r['reference']] + [r['target_hard']] * 5),
     r"record 3 \(pairid \d+\): img_set.members repeats \['dev-"),
    (lambda r: r.update(pairid=True), r"'pairid' should be int, got bool"),
])
def test_malformed_record(tmp_path, real_cirr, mutate, message):
    root = tmp_path / 'c'
    os.makedirs(root / 'cirr' / 'captions')
    shutil.copytree(osp.join(real_cirr, 'cirr', 'image_splits'), root / 'cirr' / 'image_splits')
    records = json.load(open(osp.join(real_cirr, 'cirr', 'captions', 'cap.rc2.val.json')))
    mutate(records[3])
    json.dump(records, open(root / 'cirr' / 'captions' / 'cap.rc2.val.json', 'w'))
    with pytest.raises(ValueError, match=message):
        CIRR(str(root), 'val', check_images=False)


def test_absurdly_nested_json_names_the_file(tmp_path, real_cirr):
    root = tmp_path / 'c'
    os.makedirs(root / 'cirr' / 'captions')
    shutil.copytree(osp.join(real_cirr, 'cirr', 'image_splits'), root / 'cirr' / 'image_splits')
    (root / 'cirr' / 'captions' / 'cap.rc2.val.json').write_text('[' * 100_000 + ']' * 100_000)
    with pytest.raises(ValueError, match=r'cap\.rc2\.val\.json: the JSON is nested too deeply'):
        CIRR(str(root), 'val', check_images=False)


def test_broken_json(tmp_path, real_cirr):
    root = tmp_path / 'c'
    os.makedirs(root / 'cirr' / 'captions')
    shutil.copytree(osp.join(real_cirr, 'cirr', 'image_splits'), root / 'cirr' / 'image_splits')
    (root / 'cirr' / 'captions' / 'cap.rc2.val.json').write_text('[{"pairid": 1,')
    with pytest.raises(ValueError, match=r'cap\.rc2\.val\.json is not valid JSON'):
        CIRR(str(root), 'val')


def test_missing_images_error_then_skip(tmp_path, tiny_cirr):
    root = tiny_cirr['root']
    val = tiny_cirr['val']
    missing_name = val['records'][0]['target_hard']
    os.remove(osp.join(root, val['rels'][missing_name]))
    with pytest.raises(MissingImages, match=r'1 of 24 referenced images are missing.*'
                       + missing_name + r'[\s\S]*skip_missing=True'):
        CIRR(root, 'val', report_dir=str(tmp_path / 'logs'))
    # The same reporter as Fashion-IQ: the full list is written next to the logs.
    listed = (tmp_path / 'logs' / 'missing_images_cirr_val.txt').read_text().splitlines()
    assert [line.split('\t')[:2] for line in listed] == [['val', missing_name]]
    dataset = CIRR(root, 'val', skip_missing=True, report_dir=str(tmp_path / 'logs'))
    affected = [r['pairid'] for r in val['records']
                if missing_name in (r['reference'], r['target_hard'], *r['img_set']['members'])]
    assert dataset.dropped_pairids == affected
    assert len(dataset) == len(val['records']) - len(affected)
    assert len(dataset.gallery) == 23 and missing_name not in dataset.gallery_names
    names = dataset.gallery_names
    for i in range(len(dataset)):
        item = dataset.get_data_info(i)
        record = next(r for r in val['records'] if r['pairid'] == item['pairid'])
        assert names[item['target_index']] == record['target_hard']
        assert names[item['ref_index']] == record['reference']


def test_unreadable_image_names_the_file(tiny_cirr):
    root = tiny_cirr['root']
    name = tiny_cirr['val']['records'][0]['reference']
    path = osp.join(root, tiny_cirr['val']['rels'][name])
    with open(path, 'wb') as f:
        f.write(b'not a png')
    dataset = CIRR(root, 'val', pipeline=QUERY_PIPELINE)
    with pytest.raises(OSError, match='cannot read image .*' + name):
        dataset[0]


def rewrite_val(root, change):
    path = osp.join(root, 'cirr', 'captions', 'cap.rc2.val.json')
    records = json.load(open(path))
    change(records)
    json.dump(records, open(path, 'w'))


@pytest.mark.parametrize('change, message', [
    (lambda r: r[3].update(pairid=r[1]['pairid']),
     r'record 3 \(pairid \d+\): the pairid is already used by record 1'),
    (lambda r: r[2].update(target_hard=r[2]['reference']),
     r'record 2 \(pairid \d+\): the target is the reference image'),
])
def test_duplicate_pairid_and_target_equal_to_reference_are_refused(tiny_cirr, change, message):
    rewrite_val(tiny_cirr['root'], change)
    with pytest.raises(ValueError, match=message):
        CIRR(tiny_cirr['root'], 'val')


def test_train_checks_only_the_images_its_triplets_use(tmp_path):
    root = str(tmp_path / 'cirr_dataset')
    train = make_tiny_cirr(root, num_images=40, num_train=3)['train']
    used = {n for r in train['records']
            for n in (r['reference'], r['target_hard'], *r['img_set']['members'])}
    unused = [n for n in train['rels'] if n not in used]
    assert unused, 'the fixture should list images no triplet uses'
    os.remove(osp.join(root, 'images', train['rels'][unused[0]]))
    assert len(CIRR(root, 'train', report_dir=str(tmp_path))) == len(train['records'])
    os.remove(osp.join(root, 'images', train['rels'][train['records'][0]['reference']]))
    with pytest.raises(MissingImages, match='1 of'):
        CIRR(root, 'train', report_dir=str(tmp_path))


def test_decode_check_reports_every_unreadable_image_at_once(tmp_path, tiny_cirr):
    root, rels = tiny_cirr['root'], tiny_cirr['val']['rels']
    names = list(rels)[:3]
    open(osp.join(root, rels[names[0]]), 'wb').close()  # zero bytes
    with open(osp.join(root, rels[names[1]]), 'r+b') as f:  # truncated
        f.truncate(60)
    with open(osp.join(root, rels[names[2]]), 'w') as f:  # not an image
        f.write('<html>404</html>')
    assert len(CIRR(root, 'val')) == len(tiny_cirr['val']['records'])  # existence only
    with pytest.raises(MissingImages, match='3 of 24 referenced images are missing or unreadable'):
        CIRR(root, 'val', decode_images=True, report_dir=str(tmp_path))
    listed = (tmp_path / 'missing_images_cirr_val.txt').read_text().splitlines()
    assert sorted(line.split('\t')[1] for line in listed) == sorted(names)
    assert all(line.split('\t')[3].startswith('unreadable: ') for line in listed)


def test_images_or_pairids_shared_between_splits_are_refused(tiny_cirr):
    root, train = tiny_cirr['root'], tiny_cirr['train']
    rewrite_val(root, lambda r: r[0].update(pairid=train['records'][5]['pairid']))
    with pytest.raises(ValueError, match=r'1 pairids of .*cap\.rc2\.val\.json are also in '
                                         r'.*cap\.rc2\.train\.json'):
        CIRR(root, 'val')
    rewrite_val(root, lambda r: r[0].update(pairid=999999))
    split_file = osp.join(root, 'cirr', 'image_splits', 'split.rc2.train.json')
    rels = json.load(open(split_file))
    val_name = next(iter(tiny_cirr['val']['rels']))
    json.dump(dict(rels, **{val_name: './train/0/x.png'}), open(split_file, 'w'))
    with pytest.raises(ValueError, match=rf"1 images of .*split\.rc2\.val\.json are also in "
                                         rf".*split\.rc2\.train\.json, e\.g\. \['{val_name}'\]"):
        CIRR(root, 'val')
