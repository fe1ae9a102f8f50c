"""Your own triplets (CustomCIRDataset, TripletRecallMetric): the same triplets in CIRR's layout
and in the JSONL/CSV layout give the same items, gallery, features and recalls; caption lists;
and every bad input named by file and line."""
import os.path as osp
import random

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from helpers import (GALLERY_PIPELINE, QUERY_PIPELINE, TRAIN_PIPELINE, cirr_as_triplets,
                     make_tiny_cirr, write_image, write_tiny_config, write_triplets)
from ssn_plugin.datasets import CIRR, CustomCIRDataset, MissingImages
from ssn_plugin.engine import GalleryFeatureHook, ImageSizeFromModelHook
from ssn_plugin.evaluation import TripletRecallMetric

PLAIN_KEYS = ('text', 'ref_img_path', 'tgt_img_path', 'ref_index', 'target_index')


@pytest.fixture
def tiny(tmp_path):
    root = str(tmp_path / 'cirr_dataset')
    return root, make_tiny_cirr(root, num_images=14, num_train=8, num_val=9)


@pytest.mark.parametrize('fmt', ['jsonl', 'csv'])
@pytest.mark.parametrize('split', ['train', 'val'])
def test_cirr_and_triplet_layouts_give_the_same_items_and_gallery(tiny, tmp_path, split, fmt):
    root, info = tiny
    cirr = CIRR(root, split, report_dir=str(tmp_path))
    own = CustomCIRDataset(**cirr_as_triplets(root, info, split, fmt), report_dir=str(tmp_path))
    assert len(own) == len(cirr)
    cirr_paths = [g['img_path'] for g in cirr.gallery]
    own_paths = [g['img_path'] for g in own.gallery]
    if split == 'train':  # training reads the images its triplets name
        assert set(own_paths) == {cirr_paths[i] for k in range(len(cirr)) for i in (
            cirr.get_data_info(k)['ref_index'], cirr.get_data_info(k)['target_index'])}
    else:  # the whole split: the records' images, then gallery.txt
        assert sorted(own_paths) == sorted(cirr_paths)
    for k in range(len(cirr)):
        a, b = cirr.get_data_info(k), own.get_data_info(k)
        assert (a['text'], a['ref_img_path'], a['tgt_img_path']) == \
            (b['text'], b['ref_img_path'], b['tgt_img_path'])
        assert own_paths[b['ref_index']] == a['ref_img_path']
        assert own_paths[b['target_index']] == a['tgt_img_path']
        assert b['id'] == str(a['pairid']) and b['line'] == k + (1 if fmt == 'jsonl' else 2)


def test_the_same_features_and_recalls_as_cirr(tiny, tmp_path, tiny_clip_file):
    """One model, the two layouts: every gallery image gets the same feature, and Recall@K of
    TripletRecallMetric equals CIRRMetric's (both remove the reference)."""
    root, info = tiny
    own_args = cirr_as_triplets(root, info, 'val')
    cfg = Config.fromfile(write_tiny_config(tmp_path, root, tiny_clip_file))
    cfg.work_dir = str(tmp_path / 'work_cirr')
    cirr_runner = Runner.from_cfg(cfg)
    own_cfg = Config.fromfile(write_tiny_config(tmp_path, root, tiny_clip_file))
    own_cfg.work_dir = str(tmp_path / 'work_own')
    own_cfg.val_dataloader.dataset = dict(type='CustomCIRDataset', **own_args,
                                          pipeline=QUERY_PIPELINE,
                                          gallery_pipeline=GALLERY_PIPELINE)
    own_cfg.val_evaluator = dict(type='TripletRecallMetric')
    own_runner = Runner.from_cfg(own_cfg)
    own_runner.model.load_state_dict(cirr_runner.model.state_dict())

    results = {}
    for name, runner in (('cirr', cirr_runner), ('own', own_runner)):
        ImageSizeFromModelHook().before_val(runner)
        GalleryFeatureHook(batch_size=4).before_val_epoch(runner)
        metric = runner.val_loop.evaluator.metrics[0]
        dataset = runner.val_loop.dataloader.dataset
        feats = {g['img_path']: metric.gallery_feats[i] for i, g in enumerate(dataset.gallery)}
        runner.model.eval()
        with torch.no_grad():
            for batch in runner.val_loop.dataloader:
                runner.val_loop.evaluator.process(runner.model.val_step(batch), batch)
        results[name] = feats, runner.val_loop.evaluator.evaluate(len(dataset))
    (cirr_feats, cirr_metrics), (own_feats, own_metrics) = results['cirr'], results['own']
    assert set(cirr_feats) == set(own_feats)
    assert all(torch.allclose(cirr_feats[p], own_feats[p], atol=1e-6) for p in cirr_feats)
    for k in (1, 5, 10, 50):
        assert own_metrics[f'triplets/R@{k}'] == cirr_metrics[f'cirr/R@{k}']
    assert own_metrics['triplets/mean_R'] == pytest.approx(
        sum(cirr_metrics[f'cirr/R@{k}'] for k in (1, 5, 10, 50)) / 4)


def test_caption_lists(tmp_path):
    """Training draws one caption per step; evaluation makes each its own query."""
    rows = [dict(reference='a.png', caption=['in red', 'red one', 'make it red'],
                 target='b.png'),
            dict(reference='b.png', caption='bigger', target='c.png', group='size')]
    for split in ('train', 'val'):
        write_triplets(str(tmp_path), rows, split)
    train = CustomCIRDataset(str(tmp_path), 'train', pipeline=TRAIN_PIPELINE)
    assert len(train) == 2
    random.seed(0)
    drawn = [train[0]['data_samples'].text for _ in range(40)]
    assert set(drawn) == set(rows[0]['caption'])
    assert train.get_data_info(0)['text'] == rows[0]['caption']  # the item keeps the list
    val = CustomCIRDataset(str(tmp_path), 'val')
    items = [val.get_data_info(i) for i in range(len(val))]
    assert [(i['text'], i['caption_index'], i['line']) for i in items] == [
        ('in red', 0, 1), ('red one', 1, 1), ('make it red', 2, 1), ('bigger', 0, 2)]
    assert {i['target_index'] for i in items[:3]} == {val.gallery_names.index('b.png')}
    assert items[3]['group'] == 'size' and items[0]['group'] is None
    assert items[0]['id'] == 'line 1'  # no id: the record is named by its line


def test_gallery_file_adds_distractors_in_its_order(tmp_path):
    write_triplets(str(tmp_path), [dict(reference='x/a.png', caption='c', target='x/b.png')])
    for i, name in enumerate(('y/d1.png', 'x/b.png', 'y/d2.png')):
        write_image(str(tmp_path / 'images' / name), size=(8, 8), seed=10 + i)
    (tmp_path / 'gallery.txt').write_text('y/d1.png\n\nx/b.png\n./y/d2.png\n')
    val = CustomCIRDataset(str(tmp_path), 'val')
    assert val.gallery_names == ['x/a.png', 'x/b.png', 'y/d1.png', 'y/d2.png']
    train_rows = [dict(reference='x/a.png', caption='c', target='x/b.png')]
    write_triplets(str(tmp_path), train_rows, 'train')
    assert CustomCIRDataset(str(tmp_path), 'train').gallery_names == ['x/a.png', 'x/b.png']


GOOD = dict(reference='a.png', caption='in red', target='b.png')


@pytest.mark.parametrize('rows, line, expected', [
    ([GOOD, '{"reference": "a.png", "caption": '], 2, 'not a JSON object'),
    ([GOOD, '[1, 2]'], 2, 'expected a JSON object'),
    ([dict(reference='a.png', caption='in red')], 1, "missing key 'target'"),
    ([GOOD, dict(GOOD, caption='  ')], 2, "'caption' is empty"),
    ([dict(GOOD, caption=[])], 1, 'non-empty list'),
    ([dict(GOOD, caption=['ok', 3])], 1, 'non-empty list'),
    ([dict(GOOD, target=7)], 1, "'target' should be a string, got int"),
    ([dict(GOOD, id=5)], 1, "'id' should be a string"),
    ([dict(GOOD, id='x'), dict(GOOD, id='x')], 2, "id 'x' is already used on line 1"),
    ([dict(GOOD, target='./a.png')], 1, 'the target is the reference'),
    ([dict(GOOD, reference='../secret.png')], 1, 'leaves images/'),
    ([dict(GOOD, reference='sub/../../secret.png')], 1, 'leaves images/'),
    ([dict(GOOD, target='/etc/passwd')], 1, 'leaves images/'),
])
def test_bad_records_name_the_file_and_line(tmp_path, rows, line, expected):
    path = write_triplets(str(tmp_path), rows)
    with pytest.raises(ValueError) as err:
        CustomCIRDataset(str(tmp_path), 'val')
    assert f'{path}, line {line}' in str(err.value)
    assert expected in str(err.value)


def test_blank_lines_keep_the_line_numbers(tmp_path):
    path = write_triplets(str(tmp_path), [GOOD, '', '   ', dict(GOOD, target=1)])
    with pytest.raises(ValueError, match=f'{path}, line 4'):
        CustomCIRDataset(str(tmp_path), 'val')


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match='train.jsonl.*\n.*Expected layout'):
        CustomCIRDataset(str(tmp_path), 'train')
    write_triplets(str(tmp_path), [])
    with pytest.raises(ValueError, match='no triplets'):
        CustomCIRDataset(str(tmp_path), 'val')
    write_triplets(str(tmp_path), [GOOD])
    (tmp_path / 'gallery.txt').write_text('c.png\n../outside.png\n')
    with pytest.raises(ValueError, match=r'gallery.txt, line 2: .*leaves images/'):
        CustomCIRDataset(str(tmp_path), 'val')
    (tmp_path / 'gallery.txt').write_text('c.png\nc.png\n')
    with pytest.raises(ValueError, match=r'gallery.txt, line 2: .*already listed on line 1'):
        CustomCIRDataset(str(tmp_path), 'val')
    with pytest.raises(ValueError, match="Unknown Custom triplets split 'dev'"):
        CustomCIRDataset(str(tmp_path), 'dev')


def test_bad_csv(tmp_path):
    csv_file = tmp_path / 'val.csv'
    csv_file.write_text('reference,caption,goal\na.png,red,b.png\n')
    with pytest.raises(ValueError, match=r'val.csv, line 1: the header'):
        CustomCIRDataset(str(tmp_path), 'val')
    csv_file.write_text('reference,caption,target\na.png,red,b.png\nb.png,blue\n')
    with pytest.raises(ValueError, match=r"val.csv, line 3: missing key 'target'"):
        CustomCIRDataset(str(tmp_path), 'val')
    csv_file.write_text('reference,caption,target\na.png,red,b.png,extra\n')
    with pytest.raises(ValueError, match=r'val.csv, line 2: more fields'):
        CustomCIRDataset(str(tmp_path), 'val')


def test_csv_empty_values_and_windows_line_ends(tmp_path):
    """An empty optional column is an absent key (the record is named by its line); an empty
    required one is an error; CRLF files and a quoted caption over two lines are read as the
    csv module reads them (newline='')."""
    for name in ('a.png', 'b.png', 'c.png'):
        write_image(str(tmp_path / 'images' / name), size=(8, 8))
    csv_file = tmp_path / 'val.csv'
    csv_file.write_bytes(b'id,reference,caption,target\r\n,a.png,red,b.png\r\n'
                         b'x,b.png,"two\r\nlines",c.png\r\nz,c.png,blue,a.png\r\n')
    val = CustomCIRDataset(str(tmp_path), 'val')
    items = [val.get_data_info(i) for i in range(3)]
    assert [i['id'] for i in items] == ['line 2', 'x', 'z']
    assert items[1]['text'] == 'two\r\nlines' and [i['line'] for i in items] == [2, 4, 5]
    csv_file.write_text('reference,caption,target\na.png,,b.png\n')
    with pytest.raises(ValueError, match=r"val.csv, line 2: 'caption' is empty"):
        CustomCIRDataset(str(tmp_path), 'val')


def test_missing_images_are_reported_or_skipped_with_a_count(tmp_path):
    rows = [GOOD, dict(reference='b.png', caption='blue', target='c.png', id='second')]
    write_triplets(str(tmp_path), rows)
    (tmp_path / 'images' / 'c.png').unlink()
    with pytest.raises(MissingImages, match='1 of 3 referenced images are missing') as err:
        CustomCIRDataset(str(tmp_path), 'val', report_dir=str(tmp_path))
    report = tmp_path / 'missing_images_custom_val.txt'
    assert str(report) in str(err.value)
    assert report.read_text().split('\t')[1:3] == [
        'c.png', osp.join(str(tmp_path), 'images', 'c.png')]
    val = CustomCIRDataset(str(tmp_path), 'val', report_dir=str(tmp_path), skip_missing=True)
    assert len(val) == 1 and val.dropped_ids == ['second']
    assert val.gallery_names == ['a.png', 'b.png']


def test_image_cache_and_pictures_work_unchanged(tiny, tmp_path):
    """The image cache gives the pixels of decoding; the metric draws retrieval pictures."""
    root, info = tiny
    args = cirr_as_triplets(root, info, 'val')
    plain = CustomCIRDataset(**args, pipeline=QUERY_PIPELINE, gallery_pipeline=GALLERY_PIPELINE)
    cached = CustomCIRDataset(**args, pipeline=QUERY_PIPELINE, gallery_pipeline=GALLERY_PIPELINE,
                              image_cache=str(tmp_path / 'cache'))
    assert cached.prepare_for_model((32, 32))[1] == 2  # query and gallery lookups
    for i in (0, len(plain) - 1):
        assert torch.equal(plain[i]['inputs']['ref_img'], cached[i]['inputs']['ref_img'])
    gallery = torch.nn.functional.normalize(torch.randn(len(plain.gallery), 8), dim=-1)
    metric = TripletRecallMetric(show_dir=str(tmp_path / 'show'), show_num=2, show_topk=3)
    metric.set_gallery(gallery, plain.gallery_names, [g['img_path'] for g in plain.gallery])
    items = [plain.get_data_info(i) for i in range(len(plain))]
    metric.process(None, [dict(item, query_feat=gallery[item['target_index']])
                          for item in items])
    assert metric.evaluate(len(items))['triplets/R@1'] == 100.0
    assert sorted(p.name for p in (tmp_path / 'show').iterdir()) == [
        'query_000000.png', 'query_000001.png']
