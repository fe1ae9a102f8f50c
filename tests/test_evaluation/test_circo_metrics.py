"""CIRCO mAP@K against the dataset authors' formula, written out the straightforward way."""
import json

import pytest
import torch
import torch.nn.functional as F

from ssn_plugin.evaluation import CIRCOMetric
from ssn_plugin.evaluation.functional import circo_metrics
from ssn_plugin.evaluation.submissions import CIRCO_SERVER_MAX_BYTES


def reference_map(query, gallery, gt_lists, k):
    """Full argsort; AP@K = sum of precision@r at the ranks r <= K holding a ground truth,
    divided by min(#gt, K); reference not removed."""
    order = torch.argsort(query @ gallery.t(), dim=1, descending=True)
    aps = []
    for row, gts in zip(order.tolist(), gt_lists):
        hits, total = 0, 0.0
        for r, index in enumerate(row[:k], start=1):
            if index in gts:
                hits += 1
                total += hits / r
        aps.append(total / min(len(gts), k))
    return 100.0 * sum(aps) / len(aps)


def test_hand_made_cases():
    gallery = torch.eye(6)
    # Query ranks 0 > 1 > 2 > 3 > 4 > 5.
    query = F.normalize(torch.tensor([[6.0, 5, 4, 3, 2, 1]]), dim=-1)
    # Ground truths at ranks 2 and 4: AP@5 = (1/2 + 2/4) / 2 = 0.5.
    out = circo_metrics(query, gallery, torch.tensor([[1, 3, -1]]), torch.tensor([1]),
                        ks=(1, 2, 5))
    assert out == {'mAP@1': 0.0, 'mAP@2': 25.0, 'mAP@5': 50.0,
                   'R@1': 0.0, 'R@2': 100.0, 'R@5': 100.0}
    # More ground truths than K: the divisor is K, so a perfect top-2 gives 100.
    out = circo_metrics(query, gallery, torch.tensor([[0, 1, 2, 3]]), ks=(2, 6))
    assert out == {'mAP@2': 100.0, 'mAP@6': 100.0}
    # The reference is not removed: a query equal to a gallery image finds it first.
    out = circo_metrics(gallery[:1], gallery, torch.tensor([[0]]), ks=(1, ))
    assert out['mAP@1'] == 100.0


def test_matches_the_formula_on_random_features():
    generator = torch.Generator().manual_seed(0)
    gallery = F.normalize(torch.randn(300, 16, generator=generator), dim=-1)
    query = F.normalize(gallery[:40] + 0.8 * torch.randn(40, 16, generator=generator), dim=-1)
    gt_lists = [sorted({i, *torch.randint(0, 300, (int(n), ), generator=generator).tolist()})
                for i, n in enumerate(torch.randint(0, 6, (40, ), generator=generator))]
    width = max(len(g) for g in gt_lists)
    gt_index = torch.tensor([g + [-1] * (width - len(g)) for g in gt_lists])
    for chunk in (1 << 25, 300):  # one chunk, and one query per chunk
        out = circo_metrics(query, gallery, gt_index, torch.arange(40), chunk_elems=chunk)
        for k in (5, 10, 25, 50):
            assert out[f'mAP@{k}'] == pytest.approx(reference_map(query, gallery, gt_lists, k))


def test_bad_ground_truths_are_refused():
    gallery, query = torch.eye(4), torch.eye(4)[:2]
    with pytest.raises(ValueError, match=r'queries \[1\] have no ground truth'):
        circo_metrics(query, gallery, torch.tensor([[0], [-1]]))
    with pytest.raises(ValueError, match=r'gt_index holds indices outside \[-1, 4\)'):
        circo_metrics(query, gallery, torch.tensor([[0], [4]]))
    with pytest.raises(ValueError, match=r'gt_index has shape \(3, 1\)'):
        circo_metrics(query, gallery, torch.tensor([[0], [1], [2]]))


def _val_results(num_query=40, num_gallery=300, dim=16, seed=0):
    """Random queries with 1-6 ground truths each and a few semantic aspects."""
    gen = torch.Generator().manual_seed(seed)
    gallery = F.normalize(torch.randn(num_gallery, dim, generator=gen), dim=-1)
    queries = F.normalize(torch.randn(num_query, dim, generator=gen), dim=-1)
    samples = []
    for i in range(num_query):
        count = int(torch.randint(1, 7, (1, ), generator=gen))
        gts = torch.randperm(num_gallery, generator=gen)[:count].tolist()
        samples.append(dict(query_feat=queries[i], query_id=100 + i, ref_index=i,
                            target_index=gts[0], gt_index=gts,
                            semantic_aspects=['cardinality', 'addition'][:1 + i % 2]))
    return queries, gallery, samples


def test_metric_equals_the_reference_formula_and_breaks_down_by_aspect():
    queries, gallery, samples = _val_results()
    metric = CIRCOMetric()
    metric.set_gallery(gallery, [str(10_000 + i) for i in range(gallery.shape[0])])
    metric.process(None, samples)
    out = metric.evaluate(len(samples))
    gt_lists = [s['gt_index'] for s in samples]
    for k in (5, 10, 25, 50):
        assert out[f'circo/mAP@{k}'] == pytest.approx(reference_map(queries, gallery,
                                                                    gt_lists, k))
    both = [i for i, s in enumerate(samples) if 'addition' in s['semantic_aspects']]
    assert out['circo/addition/mAP@10'] == pytest.approx(
        reference_map(queries[both], gallery, [gt_lists[i] for i in both], 10))
    assert out['circo/cardinality/mAP@10'] == pytest.approx(out['circo/mAP@10'])
    # R@K counts the annotated target only.
    scores = queries @ gallery.t()
    target = torch.tensor([s['target_index'] for s in samples])
    ranks = (scores > scores.gather(1, target[:, None])).sum(1)
    assert out['circo/R@5'] == pytest.approx(100.0 * float((ranks < 5).float().mean()))


def test_the_function_breaks_down_by_aspect_as_the_metric_does():
    """circo_metrics with semantic_aspects returns the metric's numbers, key for key: one
    route for the per-aspect mAP."""
    queries, gallery, samples = _val_results(seed=1)
    metric = CIRCOMetric()
    metric.set_gallery(gallery, [str(10_000 + i) for i in range(gallery.shape[0])])
    metric.process(None, samples)
    out = metric.evaluate(len(samples))
    width = max(len(s['gt_index']) for s in samples)
    gt_index = torch.tensor([s['gt_index'] + [-1] * (width - len(s['gt_index']))
                             for s in samples])
    expected = circo_metrics(queries, gallery, gt_index,
                             torch.tensor([s['target_index'] for s in samples]),
                             semantic_aspects=[s['semantic_aspects'] for s in samples])
    assert out == {f'circo/{k}': v for k, v in expected.items()}
    both = [i for i, s in enumerate(samples) if 'addition' in s['semantic_aspects']]
    assert expected['addition/mAP@10'] == pytest.approx(
        reference_map(queries[both], gallery, [s['gt_index'] for s in samples if
                                               'addition' in s['semantic_aspects']], 10))


def test_test_export_has_every_query_and_50_unique_ids(tmp_path):
    gen = torch.Generator().manual_seed(1)
    gallery = F.normalize(torch.randn(120, 8, generator=gen), dim=-1)
    queries = F.normalize(torch.randn(800, 8, generator=gen), dim=-1)
    names = [str(500_000 + 3 * i) for i in range(120)]
    metric = CIRCOMetric(export_dir=str(tmp_path), export_name='run1', chunk_elems=1000)
    metric.set_gallery(gallery, names)
    metric.process(None, [dict(query_feat=q, query_id=i, ref_index=i % 120, target_index=-1,
                               gt_index=[], semantic_aspects=[])
                          for i, q in enumerate(queries)])
    out = metric.evaluate(800)
    assert out == {'circo/exported_queries': 800.0}
    path = tmp_path / 'circo_submission_run1.json'
    assert path.stat().st_size < CIRCO_SERVER_MAX_BYTES
    content = json.loads(path.read_text())
    assert sorted(content, key=int) == [str(i) for i in range(800)]
    order = torch.argsort(queries @ gallery.t(), dim=1, descending=True)[:, :50]
    for key in ('0', '417', '799'):
        ids = content[key]
        assert len(ids) == len(set(ids)) == 50 and all(isinstance(i, int) for i in ids)
        # The reference is not removed, and the order is the ranking's.
        assert ids == [int(names[j]) for j in order[int(key)].tolist()]


def test_metric_refuses_what_it_cannot_score():
    metric = CIRCOMetric()
    metric.set_gallery(torch.eye(60), [str(i) for i in range(60)])
    metric.process(None, [dict(query_feat=torch.eye(60)[0], query_id=0, ref_index=0,
                               target_index=-1, gt_index=[], semantic_aspects=[])])
    with pytest.raises(ValueError, match='set export_dir'):
        metric.evaluate(1)
    small = CIRCOMetric()
    small.set_gallery(torch.eye(20), [str(i) for i in range(20)])
    small.process(None, [dict(query_feat=torch.eye(20)[0], query_id=0, ref_index=0,
                              target_index=1, gt_index=[1], semantic_aspects=[])])
    with pytest.raises(ValueError, match='the gallery has 20 images; CIRCO ranks the top 50'):
        small.evaluate(1)
    with pytest.raises(ValueError, match='aspect_k=7'):
        CIRCOMetric(aspect_k=7)


def test_ties():
    """Tied ground truths score as any order of them would; a ground truth tied with a
    distractor gets one of the two orders' values (the authors' argsort is not stable)."""
    gallery = F.normalize(torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]),
                          dim=-1)
    query = F.normalize(torch.tensor([[1.0, 0.1, 0.0]]), dim=-1)
    assert circo_metrics(query, gallery, torch.tensor([[0, 1]]), ks=(2, ))['mAP@2'] == 100.0
    tied = circo_metrics(query, gallery, torch.tensor([[1, -1]]), ks=(1, 2))
    assert (tied['mAP@1'], tied['mAP@2']) in ((100.0, 100.0), (0.0, 50.0))
