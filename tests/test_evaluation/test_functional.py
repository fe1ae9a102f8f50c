"""Ranking and recall maths against hand-computed cases and the CLIP4Cir/SSN protocol code."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import shared_data
from ssn_plugin.evaluation.functional import (cirr_recalls, fashioniq_recalls, rank_gallery,
                                              recall_at_k)


def clip4cir_cirr_reference(query, gallery, names, refs, targets, members):
    """The CLIP4Cir / SSN validate.py computation, written out with full argsort and names."""
    distances = 1 - query @ gallery.T
    sorted_indices = torch.argsort(distances, dim=-1).cpu()
    sorted_names = np.array(names)[sorted_indices]
    reference_mask = torch.tensor(
        sorted_names != np.repeat(np.array(refs), len(names)).reshape(len(targets), -1))
    sorted_names = sorted_names[reference_mask].reshape(sorted_names.shape[0],
                                                        sorted_names.shape[1] - 1)
    labels = torch.tensor(
        sorted_names == np.repeat(np.array(targets), len(names) - 1).reshape(len(targets), -1))
    group_members = np.array(members)
    group_mask = (sorted_names[..., None] == group_members[:, None, :]).sum(-1).astype(bool)
    group_labels = labels[group_mask].reshape(labels.shape[0], -1)
    assert torch.equal(torch.sum(labels, dim=-1).int(), torch.ones(len(targets)).int())
    out = {}
    for k in (1, 5, 10, 50):
        out[f'R@{k}'] = (torch.sum(labels[:, :k]) / len(labels)).item() * 100
    for k in (1, 2, 3):
        out[f'Rsubset@{k}'] = (torch.sum(group_labels[:, :k]) / len(group_labels)).item() * 100
    return out


def test_hand_computed_cirr_case():
    # Gallery of 5 one-hot-ish directions; query 0 ranks 4 > 3 > 0(ref) > 1 > 2.
    gallery = torch.eye(5)
    query = F.normalize(torch.tensor([[0.5, 0.2, 0.1, 0.8, 0.9],
                                      [0.9, 0.8, 0.1, 0.2, 0.3]]), dim=-1)
    ref = torch.tensor([0, 1])
    target = torch.tensor([1, 4])
    subset = torch.tensor([[0, 1, 2, 3, 4, 4], [1, 0, 4, 2, 3, 3]])
    ranked = rank_gallery(query, gallery, target, ref, subset, topk=3)
    # Query 0 without its reference: 4, 3, 1, 2 -> target 1 at rank 2.
    # Query 1 without its reference: 0, 4, 3, 2 -> target 4 at rank 1.
    assert ranked['target_rank'].tolist() == [2, 1]
    assert ranked['topk_index'].tolist() == [[4, 3, 1], [0, 4, 3]]
    expected_scores = torch.stack([query[i][ranked['topk_index'][i]] for i in range(2)])
    assert torch.allclose(ranked['topk_score'], expected_scores)
    assert ranked['subset_order'][0].tolist() == [4, 4, 3, 1, 2, -1]
    metrics = cirr_recalls(query, gallery, ref, target, subset, topk=(1, 2, 3),
                           subset_topk=(1, 2))
    assert metrics == {'R@1': 0.0, 'R@2': 50.0, 'R@3': 100.0, 'Rsubset@1': 0.0,
                       'Rsubset@2': 50.0}


def test_reference_removal_changes_the_rank():
    gallery = torch.eye(3)
    query = F.normalize(torch.tensor([[1.0, 0.5, 0.0]]), dim=-1)
    target = torch.tensor([1])
    kept = rank_gallery(query, gallery, target)['target_rank'].item()
    removed = rank_gallery(query, gallery, target, exclude_index=torch.tensor([0]))
    assert kept == 1 and removed['target_rank'].item() == 0


def test_fashioniq_keeps_the_reference():
    gallery = torch.eye(3)
    query = F.normalize(torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.1, 1.0]]), dim=-1)
    assert fashioniq_recalls(query, gallery, torch.tensor([1, 2]), topk=(1, 2)) == {
        'R@1': 50.0, 'R@2': 100.0}


@pytest.mark.parametrize('chunk_elems', [1, 7, 1 << 25])
def test_cirr_recalls_match_clip4cir_on_real_val_annotations(chunk_elems):
    records = json.load(open(shared_data('cirr', 'captions', 'cap.rc2.val.json')))
    names = list(json.load(open(shared_data('cirr', 'image_splits', 'split.rc2.val.json'))))
    records = records[:600] if chunk_elems < 100 else records
    index = {n: i for i, n in enumerate(names)}
    torch.manual_seed(0)
    gallery = F.normalize(torch.randn(len(names), 16), dim=-1)
    refs = [r['reference'] for r in records]
    targets = [r['target_hard'] for r in records]
    members = [r['img_set']['members'] for r in records]
    ref_index = torch.tensor([index[n] for n in refs])
    target_index = torch.tensor([index[n] for n in targets])
    # Queries near their targets, so that recalls are neither 0 nor 100.
    query = F.normalize(gallery[target_index] + 1.2 * torch.randn(len(records), 16), dim=-1)
    ours = cirr_recalls(query, gallery, ref_index, target_index,
                        torch.tensor([[index[m] for m in ms] for ms in members]),
                        chunk_elems=chunk_elems)
    expected = clip4cir_cirr_reference(query, gallery, names, refs, targets, members)
    assert 0 < ours['R@1'] < ours['R@50'] < 100
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, abs=1e-4), key
    assert ours['Avg'] == pytest.approx((expected['R@5'] + expected['Rsubset@1']) / 2,
                                        abs=1e-4)


def test_half_precision_features_are_ranked_in_fp32():
    torch.manual_seed(1)
    gallery = F.normalize(torch.randn(50, 8), dim=-1)
    query = F.normalize(torch.randn(10, 8), dim=-1)
    target = torch.arange(10)
    ranks16 = rank_gallery(query.half(), gallery.half(), target)['target_rank']
    ranks32 = rank_gallery(query.half().float(), gallery.half().float(), target)['target_rank']
    assert torch.equal(ranks16, ranks32)


def test_bad_indices_are_refused():
    gallery = torch.eye(3)
    query = torch.eye(3)[:1]
    with pytest.raises(ValueError, match='outside'):
        rank_gallery(query, gallery, torch.tensor([3]))
    with pytest.raises(ValueError, match='exclude their own target'):
        rank_gallery(query, gallery, torch.tensor([1]), exclude_index=torch.tensor([1]))
    with pytest.raises(ValueError, match='no target among its img_set'):
        cirr_recalls(query, gallery, torch.tensor([0]), torch.tensor([1]),
                     torch.tensor([[0, 2, 2, 2, 2, 2]]))
    with pytest.raises(ValueError, match='empty'):
        recall_at_k(torch.empty(0, dtype=torch.long), 1)


def test_non_finite_features_are_refused():
    """NaN scores compare False with everything: unguarded, every target would rank first."""
    gallery = torch.eye(3)
    query = torch.full((2, 3), float('nan'))
    with pytest.raises(ValueError, match='2 query features are not finite'):
        rank_gallery(query, gallery, torch.tensor([0, 1]))
    gallery[1, 0] = float('inf')
    with pytest.raises(ValueError, match=r'1 gallery features are not finite \(first rows: \[1\]'):
        rank_gallery(torch.eye(3)[:1], gallery, torch.tensor([0]))


def test_recalls_by_group_hand_made():
    from ssn_plugin.evaluation import recalls_by_group
    ranks = torch.tensor([0, 3, 0, 1, 7])
    subset = torch.tensor([0, 1, 2, 0, 0])
    groups = ['add', 'remove', 'add', 'remove', 'colour']
    out = recalls_by_group({'R': ranks, 'Rsubset': subset}, groups,
                           {'R': (1, 5), 'Rsubset': (1, )})
    assert out == {
        'add': {'R@1': 100.0, 'R@5': 100.0, 'Rsubset@1': 50.0, 'queries': 2},
        'colour': {'R@1': 0.0, 'R@5': 0.0, 'Rsubset@1': 100.0, 'queries': 1},
        'remove': {'R@1': 0.0, 'R@5': 100.0, 'Rsubset@1': 50.0, 'queries': 2},
    }


def scored_gallery():
    """5 queries over a 6-image gallery with distinct scores; query i is the gallery image i."""
    gallery = F.normalize(torch.randn(6, 8, generator=torch.Generator().manual_seed(3)), dim=-1)
    return gallery[:5].clone(), gallery


def test_only_the_requested_outputs_are_returned():
    query, gallery = scored_gallery()
    target = torch.arange(5)
    assert set(rank_gallery(query, gallery, target)) == {'target_rank'}
    out = rank_gallery(query, gallery, target, topk=1)
    assert set(out) == {'target_rank', 'topk_index', 'topk_score'}
    assert out['topk_index'].shape == (5, 1) and torch.equal(out['topk_index'][:, 0], target)
    out = rank_gallery(query, gallery, subset_index=torch.tensor([[0, 1]] * 5))
    assert set(out) == {'subset_order'}


def test_topk_may_reach_every_rankable_item():
    query, gallery = scored_gallery()
    assert rank_gallery(query, gallery, topk=6)['topk_index'].shape == (5, 6)
    exclude = torch.arange(5)
    assert rank_gallery(query, gallery, exclude_index=exclude,
                        topk=5)['topk_index'].shape == (5, 5)
    with pytest.raises(ValueError, match='topk=6 exceeds the 5 rankable'):
        rank_gallery(query, gallery, exclude_index=exclude, topk=6)
    with pytest.raises(ValueError, match='topk=7 exceeds the 6 rankable'):
        rank_gallery(query, gallery, topk=7)


def test_unknown_and_absent_targets_rank_minus_one():
    query, gallery = scored_gallery()
    query[1] = gallery[5]  # query 1 matches its target, the last gallery image, exactly
    # Query 0's target is unknown; query 1's target (image 5, the last one) is not in its
    # subset; queries 2-4 have theirs in the subset.
    target = torch.tensor([-1, 5, 2, 3, 4])
    exclude = torch.tensor([-1, -1, 0, 1, -1])  # no exclusion for queries 0, 1 and 4
    subset = torch.tensor([[0, 1, 2], [0, 1, 2], [0, 1, 2], [1, 2, 3], [2, 3, 4]])
    out = rank_gallery(query, gallery, target, exclude_index=exclude, subset_index=subset)
    assert out['target_rank'][0] == -1 and out['subset_target_rank'][0] == -1
    assert out['subset_target_rank'][1] == -1  # image 5 is not in query 1's subset
    # Image 5 is rankable for query 1 (exclusion -1 removes nothing, not the last image).
    assert out['target_rank'][1] == 0
    assert (out['subset_target_rank'][2:] >= 0).all()


def test_int32_indices_work_like_int64():
    query, gallery = scored_gallery()
    target, exclude = torch.tensor([1, 2, 3, 4, 0]), torch.tensor([0, 1, 2, 3, 4])
    subset = torch.tensor([[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5], [0, 4, 5]])
    wide = rank_gallery(query, gallery, target, exclude, subset)
    narrow = rank_gallery(query, gallery, target.int(), exclude.int(), subset.int())
    for key in wide:
        assert torch.equal(wide[key], narrow[key]), key


def test_index_errors_name_the_argument():
    query, gallery = scored_gallery()
    for name in ('target_index', 'exclude_index'):
        with pytest.raises(ValueError, match=f'^{name} has shape'):
            rank_gallery(query, gallery, **{name: torch.zeros(4, dtype=torch.long)})
        with pytest.raises(ValueError, match=rf'^{name} holds indices outside \[-1, 6\)'):
            rank_gallery(query, gallery, **{name: torch.tensor([0, 1, 2, 3, -2])})
    with pytest.raises(ValueError, match='^subset_index has shape'):
        rank_gallery(query, gallery, subset_index=torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r'^queries \[0\] exclude their own target'):
        rank_gallery(query, gallery, torch.tensor([0, 2, 3, 4, 5]),
                     exclude_index=torch.tensor([0, 1, 2, 3, 4]))
    with pytest.raises(ValueError, match='1 queries have no target in the gallery'):
        cirr_recalls(query[:1], gallery, torch.tensor([1]), torch.tensor([-1]),
                     torch.tensor([[0, 1, 2, 3, 4, 5]]))
    with pytest.raises(ValueError, match='1 queries have no target in the gallery'):
        fashioniq_recalls(query[:1], gallery, torch.tensor([-1]))


def test_tied_subset_members_keep_their_order():
    gallery = torch.zeros(6, 4)
    gallery[:, 0] = 1.0  # every gallery image scores the same for any query
    query = torch.tensor([[1.0, 0, 0, 0]])
    for members in ([5, 1, 3, 0], [0, 3, 1, 5]):
        out = rank_gallery(query, gallery, subset_index=torch.tensor([members]))
        assert out['subset_order'][0].tolist() == members


def test_no_queries_give_empty_long_outputs():
    _, gallery = scored_gallery()
    out = rank_gallery(torch.empty(0, 8), gallery, torch.empty(0, dtype=torch.long),
                       subset_index=torch.empty(0, 2, dtype=torch.long), topk=2)
    assert set(out) == {'target_rank', 'topk_index', 'topk_score', 'subset_order',
                        'subset_target_rank'}
    for key, value in out.items():
        assert value.shape == (0, ) and value.dtype == torch.long, key


def test_release_means_match_statistics_on_real_val_annotations():
    """The three means the release selects CIRR checkpoints by, over the seven recalls, as
    Python's statistics module defines them: sum/7, 7/sum(1/x), (prod x)^(1/7)."""
    import math
    import statistics
    records = json.load(open(shared_data('cirr', 'captions', 'cap.rc2.val.json')))
    names = list(json.load(open(shared_data('cirr', 'image_splits', 'split.rc2.val.json'))))
    index = {n: i for i, n in enumerate(names)}
    torch.manual_seed(3)
    gallery = F.normalize(torch.randn(len(names), 16), dim=-1)
    target_index = torch.tensor([index[r['target_hard']] for r in records])
    query = F.normalize(gallery[target_index] + torch.randn(len(records), 16), dim=-1)
    ours = cirr_recalls(query, gallery, torch.tensor([index[r['reference']] for r in records]),
                        target_index, torch.tensor([[index[m] for m in r['img_set']['members']]
                                                    for r in records]))
    seven = [ours[k] for k in ('R@1', 'R@5', 'R@10', 'R@50', 'Rsubset@1', 'Rsubset@2',
                               'Rsubset@3')]
    assert 0 < min(seven) and max(seven) < 100
    assert ours['arithmetic_mean'] == pytest.approx(sum(seven) / 7, abs=1e-9)
    assert ours['harmonic_mean'] == pytest.approx(7 / sum(1 / x for x in seven), abs=1e-9)
    assert ours['geometric_mean'] == pytest.approx(math.prod(seven) ** (1 / 7), abs=1e-9)
    assert ours['geometric_mean'] == pytest.approx(statistics.geometric_mean(seven), abs=1e-9)
    # The three differ, so the checkpoint each selects can differ.
    assert ours['harmonic_mean'] < ours['geometric_mean'] < ours['arithmetic_mean']


def test_release_means_with_a_zero_recall_and_without_all_seven():
    from ssn_plugin.evaluation.functional import release_means
    zero = dict(zip(('R@1', 'R@5', 'R@10', 'R@50', 'Rsubset@1', 'Rsubset@2', 'Rsubset@3'),
                    (0.0, 10.0, 20.0, 40.0, 30.0, 50.0, 70.0)))
    assert release_means(zero) == dict(arithmetic_mean=220.0 / 7, harmonic_mean=0.0,
                                       geometric_mean=0.0)
    assert release_means({'R@1': 5.0, 'R@5': 9.0}) == {}
