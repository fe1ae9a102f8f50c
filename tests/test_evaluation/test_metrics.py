"""CIRRMetric: recalls through BaseMetric, and the CIRR test-server export on the real files."""
import json
import os.path as osp

import pytest
import torch
import torch.nn.functional as F

from helpers import shared_data
from ssn_plugin.datasets import CIRR
from ssn_plugin.evaluation import CIRRMetric, cirr_recalls
from ssn_plugin.evaluation.submissions import CIRR_SERVER_MAX_BYTES


def features_for(dataset, dim=16, noise=1.0, seed=0):
    """Random gallery features, and queries near their target when it is known."""
    g = torch.Generator().manual_seed(seed)
    gallery = F.normalize(torch.randn(len(dataset.gallery), dim, generator=g), dim=-1)
    queries = []
    for i in range(len(dataset)):
        item = dataset.get_data_info(i)
        anchor = gallery[item['target_index']] if item['target_index'] >= 0 else gallery[item['ref_index']]
        queries.append(F.normalize(anchor + noise * torch.randn(dim, generator=g), dim=-1))
    return torch.stack(queries), gallery


def run_metric(metric, dataset, queries, gallery):
    metric.set_gallery(gallery, dataset.gallery_names)
    samples = []
    for i in range(len(dataset)):
        item = dataset.get_data_info(i)
        samples.append(dict(query_feat=queries[i], pairid=item['pairid'],
                            ref_index=item['ref_index'], target_index=item['target_index'],
                            subset_index=item['subset_index']))
    for start in range(0, len(samples), 32):
        metric.process(None, samples[start:start + 32])
    return metric.evaluate(len(samples))


@pytest.fixture(scope='module')
def cirr_val():
    return CIRR(osp.dirname(shared_data('cirr')), 'val', check_images=False)


@pytest.fixture(scope='module')
def cirr_test1():
    return CIRR(osp.dirname(shared_data('cirr')), 'test1', check_images=False)


def test_metric_equals_pure_function(cirr_val):
    queries, gallery = features_for(cirr_val)
    metrics = run_metric(CIRRMetric(), cirr_val, queries, gallery)
    items = [cirr_val.get_data_info(i) for i in range(len(cirr_val))]
    expected = cirr_recalls(queries, gallery, torch.tensor([it['ref_index'] for it in items]),
                            torch.tensor([it['target_index'] for it in items]),
                            torch.tensor([it['subset_index'] for it in items]))
    assert metrics == {f'cirr/{k}': v for k, v in expected.items()}
    assert 0 < metrics['cirr/R@1'] < 100


def test_metric_without_gallery_says_which_hook(cirr_val):
    metric = CIRRMetric()
    metric.process(None, [dict(query_feat=torch.ones(4), pairid=1, ref_index=0, target_index=1,
                               subset_index=[0, 1, 2, 3, 4, 5])])
    with pytest.raises(RuntimeError, match='GalleryFeatureHook'):
        metric.evaluate(1)


def test_test1_needs_export(cirr_test1):
    queries, gallery = features_for(cirr_test1)
    with pytest.raises(ValueError, match='export_dir'):
        run_metric(CIRRMetric(), cirr_test1, queries, gallery)


def test_test1_submission_files(tmp_path, cirr_test1):
    queries, gallery = features_for(cirr_test1)
    metrics = run_metric(CIRRMetric(export_dir=str(tmp_path), export_name='t'), cirr_test1,
                         queries, gallery)
    assert metrics == {'cirr/exported_queries': 4148.0}
    split = json.load(open(cirr_test1.split_file))
    records = {r['pairid']: r for r in json.load(open(cirr_test1.caption_file))}
    for metric, length in (('recall', 50), ('recall_subset', 3)):
        path = tmp_path / f'{metric}_submission_t.json'
        assert path.stat().st_size < CIRR_SERVER_MAX_BYTES
        content = json.load(open(path))
        assert content.pop('version') == 'rc2' and content.pop('metric') == metric
        assert set(content) == {str(p) for p in records}
        for pairid, names in content.items():
            record = records[int(pairid)]
            assert len(names) == length and len(set(names)) == length
            assert record['reference'] not in names
            assert all(n in split for n in names)
            if metric == 'recall_subset':
                assert set(names) <= set(record['img_set']['members'])


def test_val_export_reproduces_the_recalls(tmp_path, cirr_val):
    queries, gallery = features_for(cirr_val)
    metrics = run_metric(CIRRMetric(export_dir=str(tmp_path)), cirr_val, queries, gallery)
    top = json.load(open(tmp_path / 'recall_submission_ssn.json'))
    subset = json.load(open(tmp_path / 'recall_subset_submission_ssn.json'))
    records = json.load(open(cirr_val.caption_file))
    for k in (1, 5, 10, 50):
        hits = sum(r['target_hard'] in top[str(r['pairid'])][:k] for r in records)
        assert metrics[f'cirr/R@{k}'] == pytest.approx(100 * hits / len(records))
    for k in (1, 2, 3):
        hits = sum(r['target_hard'] in subset[str(r['pairid'])][:k] for r in records)
        assert metrics[f'cirr/Rsubset@{k}'] == pytest.approx(100 * hits / len(records))
    assert metrics['cirr/exported_queries'] == 4181


def test_fashioniq_metric_per_category_and_averages():
    from ssn_plugin.evaluation import FashionIQMetric, fashioniq_recalls
    torch.manual_seed(0)
    # Two categories with their own gallery ranges: [0, 30) dress, [30, 50) toptee.
    gallery = F.normalize(torch.randn(50, 8), dim=-1)
    samples, per_cat = [], {'dress': [], 'toptee': []}
    for i in range(40):
        category, (start, stop) = ('dress', (0, 30)) if i < 25 else ('toptee', (30, 50))
        target = start + (i * 7) % (stop - start)
        query = F.normalize(gallery[target] + 0.9 * torch.randn(8), dim=-1)
        samples.append(dict(query_feat=query, target_index=target, ref_index=start, category=category,
                            gallery_range=(start, stop)))
        per_cat[category].append((query, target - start))
    metric = FashionIQMetric(topk=(1, 5))
    metric.dataset_meta = dict(gallery_protocol='original')
    metric.set_gallery(gallery, [str(i) for i in range(50)])
    metric.process(None, samples)
    out = metric.evaluate(len(samples))
    expected = {}
    for category, (start, stop) in (('dress', (0, 30)), ('toptee', (30, 50))):
        q = torch.stack([x[0] for x in per_cat[category]])
        t = torch.tensor([x[1] for x in per_cat[category]])
        for k, v in fashioniq_recalls(q, gallery[start:stop], t, (1, 5)).items():
            expected[f'fiq/{category}_{k}'] = v
    for k in (1, 5):
        expected[f'fiq/avg_R@{k}'] = (expected[f'fiq/dress_R@{k}']
                                      + expected[f'fiq/toptee_R@{k}']) / 2
    expected['fiq/overall'] = (expected['fiq/avg_R@1'] + expected['fiq/avg_R@5']) / 2
    assert out == pytest.approx(expected)
    assert list(out)[:4] == ['fiq/dress_R@1', 'fiq/dress_R@5', 'fiq/toptee_R@1',
                             'fiq/toptee_R@5']
