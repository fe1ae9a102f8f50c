"""Fashion-IQ on the real annotation files with stand-in images; captions; missing images."""
import collections
import json
import os
import os.path as osp
import random
import shutil

import pytest

from helpers import make_tiny_fiq, shared_data, write_image
from ssn_plugin.datasets import FashionIQ, MissingImages, fiq_caption
from ssn_plugin.registry import TRANSFORMS

CATS = ('dress', 'shirt', 'toptee')
COUNTS = {'train': (5985, 5988, 6027), 'val': (2017, 2038, 1961), 'test': (2024, 2038, 2056)}
VAL_GALLERY = (3817, 6346, 5373)


@pytest.fixture(scope='module')
def real_fiq(tmp_path_factory):
    """The real files, and one stand-in image symlinked under every referenced ASIN."""
    root = tmp_path_factory.mktemp('fiq_real')
    shutil.copytree(shared_data('fashioniq', 'captions'), root / 'captions')
    shutil.copytree(shared_data('fashioniq', 'image_splits'), root / 'image_splits')
    source = str(root / 'standin.png')
    write_image(source, size=(8, 8))
    os.makedirs(root / 'images')
    names = set()
    for name in os.listdir(root / 'image_splits'):
        names.update(json.load(open(root / 'image_splits' / name)))
    for asin in names:
        os.symlink(source, root / 'images' / f'{asin}.png')
    return str(root)


@pytest.mark.parametrize('split', ['train', 'val', 'test'])
def test_all_categories_and_splits_load(real_fiq, split):
    dataset = FashionIQ(real_fiq, split)
    per_category = collections.Counter(dataset.get_data_info(i)['category']
                                       for i in range(len(dataset)))
    assert tuple(per_category[c] for c in CATS) == COUNTS[split]
    for category in CATS:
        split_names = json.load(open(dataset.split_file(category)))
        assert dataset.missing_summary[category]['gallery'] == len(split_names)
    if split == 'val':
        assert tuple(dataset.missing_summary[c]['gallery'] for c in CATS) == VAL_GALLERY
        item = dataset.get_data_info(0)
        record = json.load(open(dataset.caption_file('dress')))[0]
        start, stop = item['gallery_range']
        assert (start, stop) == (0, 3817)
        assert dataset.gallery_names[item['ref_index']] == record['candidate']
        assert dataset.gallery_names[item['target_index']] == record['target']
        assert item['captions'] == record['captions']
        assert (item['ref_name'], item['tgt_name']) == (record['candidate'], record['target'])
        assert item['ref_img_path'] == dataset.gallery[item['ref_index']]['img_path'] == \
            dataset.image_path(record['candidate'])
        assert item['tgt_img_path'] == dataset.gallery[item['target_index']]['img_path']
        # Each gallery entry carries its category (the metric ranks within it).
        assert dataset.gallery[0]['group'] == 'dress' and dataset.gallery[-1]['group'] == 'toptee'
        last = dataset.get_data_info(len(dataset) - 1)
        assert last['category'] == 'toptee' and last['gallery_range'] == (
            3817 + 6346, 3817 + 6346 + 5373)
        assert start <= item['target_index'] < stop
    if split == 'test':
        assert all(dataset.get_data_info(i)['target_index'] == -1 for i in range(0, 6000, 500))


def test_val_split_protocol_shrinks_the_gallery(real_fiq):
    dataset = FashionIQ(real_fiq, 'val', gallery_protocol='val-split')
    for category in CATS:
        records = json.load(open(dataset.caption_file(category)))
        used = {r['candidate'] for r in records} | {r['target'] for r in records}
        assert dataset.missing_summary[category]['gallery'] == len(used)
    assert len(dataset.gallery) < sum(VAL_GALLERY)
    assert dataset.metainfo['gallery_protocol'] == 'val-split'
    names = dataset.gallery_names
    for i in range(0, len(dataset), 97):
        item = dataset.get_data_info(i)
        record = json.load(open(dataset.caption_file(item['category'])))[item['record_idx']]
        assert names[item['target_index']] == record['target']


def test_bad_arguments(real_fiq):
    with pytest.raises(ValueError, match="Unknown Fashion-IQ split 'dev'"):
        FashionIQ(real_fiq, 'dev')
    with pytest.raises(ValueError, match=r"categories \['shoes'\]"):
        FashionIQ(real_fiq, 'val', categories=('dress', 'shoes'))
    with pytest.raises(ValueError, match='gallery_protocol'):
        FashionIQ(real_fiq, 'val', gallery_protocol='all')


def test_malformed_record_and_missing_file(tmp_path, real_fiq):
    root = tmp_path / 'f'
    shutil.copytree(osp.join(real_fiq, 'image_splits'), root / 'image_splits')
    os.makedirs(root / 'captions')
    records = json.load(open(osp.join(real_fiq, 'captions', 'cap.dress.val.json')))
    records[5]['captions'] = ['only one']
    json.dump(records, open(root / 'captions' / 'cap.dress.val.json', 'w'))
    with pytest.raises(ValueError, match=r'cap\.dress\.val\.json, record 5: captions should '):
        FashionIQ(str(root), 'val', categories=('dress', ), check_images=False)
    with pytest.raises(FileNotFoundError, match=r'cap\.shirt\.val\.json[\s\S]*images/<ASIN>'):
        FashionIQ(str(root), 'val', categories=('shirt', ), check_images=False)


def test_missing_images_error_then_skip(tmp_path, real_fiq):
    root = tmp_path / 'f'
    shutil.copytree(osp.join(real_fiq, 'captions'), root / 'captions')
    shutil.copytree(osp.join(real_fiq, 'image_splits'), root / 'image_splits')
    os.makedirs(root / 'images')
    records = json.load(open(root / 'captions' / 'cap.shirt.val.json'))
    split = json.load(open(root / 'image_splits' / 'split.shirt.val.json'))
    used = {r['candidate'] for r in records} | {r['target'] for r in records}
    unused = next(a for a in split if a not in used)  # a gallery-only image
    gone = {records[0]['candidate'], records[1]['target'], unused}
    for category in ('dress', 'shirt'):
        for asin in json.load(open(root / 'image_splits' / f'split.{category}.val.json')):
            if asin not in gone:
                os.symlink(osp.join(real_fiq, 'standin.png'), root / 'images' / f'{asin}.png')
    report_dir = tmp_path / 'work'
    with pytest.raises(MissingImages, match=r'3 of \d+ referenced images are missing '
                       r'\(dress: 0 of 3817, shirt: 3 of 6346\)'):
        FashionIQ(str(root), 'val', categories=('dress', 'shirt'), report_dir=str(report_dir))
    listed = (report_dir / 'missing_images_fashioniq_val.txt').read_text().splitlines()
    assert sorted(line.split('\t')[1] for line in listed) == sorted(gone)

    dataset = FashionIQ(str(root), 'val', categories=('dress', 'shirt'), skip_missing=True,
                        report_dir=str(report_dir))
    affected = sum(r['candidate'] in gone or r['target'] in gone for r in records)
    assert dataset.missing_summary['shirt'] == dict(
        queries=2038 - affected, dropped_queries=affected, gallery=6346 - 3, missing_images=3)
    assert dataset.missing_summary['dress']['queries'] == 2017
    assert len(dataset) == 2017 + 2038 - affected
    assert not gone & set(dataset.gallery_names)


def test_eval_caption_rule():
    assert fiq_caption('is shiny and silver.', ' fit and flare?') == \
        'Is shiny and silver and fit and flare'
    # str.capitalize lower-cases the rest, as the release.
    assert fiq_caption('Is RED', 'Has A Bow') == 'Is red and Has A Bow'
    # Only '.', '?', ',' and spaces are stripped, not letters at the ends.
    assert fiq_caption('X-ray print.', 'in XXL') == 'X-ray print and in XXL'


@pytest.mark.parametrize('u, expected', [
    (0.1, 'A b and c d'), (0.3, 'C d and a b'), (0.6, 'A b'), (0.9, 'C d'),
    (0.25, 'C d'), (0.5, 'C d'),  # the release's boundary quirk: exactly 0.25 / 0.5 -> c2
    (0.75, 'C d'),  # 'otherwise': u = 0.75 is past the single-c1 form
])
def test_random_caption_forms(u, expected):
    assert fiq_caption('a b.', 'c d', u) == expected


@pytest.mark.parametrize('u', [None, 0.1, 0.3, 0.6, 0.9])
def test_empty_captions_never_leave_a_dangling_and(u):
    assert fiq_caption('', 'is red', u) == 'Is red'
    assert fiq_caption('is red', ' ', u) == 'Is red'
    assert fiq_caption('', '', u) == ''


def test_random_forms_are_uniform_with_a_seeded_rng():
    transform = TRANSFORMS.build(dict(type='ComposeFIQCaption', random=True))
    random.seed(0)
    counts = collections.Counter(
        transform(dict(captions=['a', 'b']))['text'] for _ in range(4000))
    assert set(counts) == {'A and b', 'B and a', 'A', 'B'}
    assert all(abs(n / 4000 - 0.25) < 0.03 for n in counts.values())
    random.seed(0)
    again = [transform(dict(captions=['a', 'b']))['text'] for _ in range(20)]
    random.seed(0)
    assert again == [transform(dict(captions=['a', 'b']))['text'] for _ in range(20)]
    fixed = TRANSFORMS.build(dict(type='ComposeFIQCaption'))
    assert fixed(dict(captions=['a', 'b']))['text'] == 'A and b'


def test_missing_list_goes_to_the_run_log_dir(tmp_path):
    from mmengine.logging import MMLogger

    from helpers import make_tiny_fiq
    root = str(tmp_path / 'fiq')
    make_tiny_fiq(root)
    os.remove(osp.join(root, 'images', 'DV00000003.png'))
    log_dir = tmp_path / 'work' / '20261126_000000'
    log_dir.mkdir(parents=True)
    MMLogger.get_instance(f'fiq_missing_{id(tmp_path)}',
                          log_file=str(log_dir / '20261126_000000.log'))
    with pytest.raises(MissingImages, match='dress: 1 of 14'):
        FashionIQ(root, 'val')
    assert 'DV00000003' in (log_dir / 'missing_images_fashioniq_val.txt').read_text()


def test_train_checks_only_the_images_its_triplets_use(tmp_path):
    root = tmp_path / 'fiq'
    make_tiny_fiq(str(root), num_triplets=2)
    records = json.load(open(root / 'captions' / 'cap.dress.train.json'))
    used = {r['candidate'] for r in records} | {r['target'] for r in records}
    unused = [a for a in json.load(open(root / 'image_splits' / 'split.dress.train.json'))
              if a not in used]
    os.remove(root / 'images' / f'{unused[0]}.png')
    assert len(FashionIQ(str(root), 'train', report_dir=str(tmp_path))) == 3 * 2
    os.remove(root / 'images' / f'{records[0]["candidate"]}.png')
    with pytest.raises(MissingImages, match=r'dress: 1 of \d'):
        FashionIQ(str(root), 'train', report_dir=str(tmp_path))


def test_every_record_and_split_problem_is_named(tmp_path):
    """Each malformed record or split file of a category: its file, record and the problem."""
    from helpers import make_tiny_fiq
    root = tmp_path / 'fiq'
    make_tiny_fiq(str(root))
    caption_file = root / 'captions' / 'cap.dress.val.json'
    split_file = root / 'image_splits' / 'split.dress.val.json'
    records = json.load(open(caption_file))
    split = json.load(open(split_file))

    def fails(match, **kwargs):
        with pytest.raises((ValueError, FileNotFoundError), match=match):
            FashionIQ(str(root), 'val', categories=('dress', ), **kwargs)

    for key in ('candidate', 'captions', 'target'):
        broken = [dict(r) for r in records]
        del broken[2][key]
        json.dump(broken, open(caption_file, 'w'))
        fails(rf"cap\.dress\.val\.json, record 2: missing key '{key}'; a val record needs")
    for key in ('candidate', 'target'):
        broken = [dict(r) for r in records]
        broken[3][key] = 'NOT_IN_SPLIT'
        json.dump(broken, open(caption_file, 'w'))
        fails(rf"record 3: {key} 'NOT_IN_SPLIT' is not in .*split\.dress\.val\.json")
    json.dump(records, open(caption_file, 'w'))
    json.dump(split[:3] + [7], open(split_file, 'w'))
    fails(r'split\.dress\.val\.json: expected a list of image ids')
    json.dump({'a': 1}, open(split_file, 'w'))
    fails(r'split\.dress\.val\.json: expected a list of image ids')
    os.remove(split_file)
    fails(r'(?s)split\.dress\.val\.json\nExpected layout:\n.*images/<ASIN>')
    json.dump(split, open(split_file, 'w'))

    # check_images=False loads with images missing; the gallery pipeline and BaseDataset's
    # arguments reach the dataset.
    os.remove(root / 'images' / f'{records[0]["target"]}.png')
    dataset = FashionIQ(str(root), 'val', categories=('dress', ), check_images=False,
                        gallery_pipeline=[dict(type='LoadCIRImages', keys=('img', ))],
                        pipeline=[dict(type='LoadCIRImages', keys=('ref_img', )),
                                  dict(type='PackCIRInputs', keys=('ref_img', ))],
                        indices=4)
    assert len(dataset) == 4 and len(dataset.gallery) == len(split)
    assert dataset[0]['inputs']['ref_img'].shape == (3, 30, 40)  # through the pipeline
    assert type(dataset.gallery_dataset().pipeline.transforms[0]).__name__ == 'LoadCIRImages'
