"""CIRCO mAP@K against the dataset authors' formula, written out the straightforward way."""
import pytest
import torch
import torch.nn.functional as F

from ssn_plugin.evaluation.functional import circo_metrics


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
