"""Ranking and recall for composed image retrieval, as pure functions of tensors.

Definitions (docs/evaluation.md, the CLIP4Cir/SSN protocol):

* similarity = cosine on L2-normalised features, computed in float32 whatever the input dtype;
  a gallery is ranked by descending similarity;
* an *excluded* gallery item (CIRR: the query's reference image) is removed from the ranking
  before anything is counted;
* the rank of the target (0-based) is the number of remaining gallery items scoring strictly
  higher than the target; Recall@K = 100 * (share of queries whose target rank < K).

Ties: a gallery item scoring exactly as the target does not push the target down (the
release's non-stable ``argsort`` orders ties arbitrarily; with continuous features ties do not
occur, and the tests exclude them). Top-k lists order tied items arbitrarily, as ``argsort``.

Memory: queries are processed in chunks of ``max(1, chunk_elems // G)`` rows, so at most about
``chunk_elems`` similarities exist at a time; no [N, G] sort or [N, G] array is ever built.
"""
import statistics
from typing import Dict, Optional, Sequence

import torch

DEFAULT_CHUNK_ELEMS = 1 << 25  # 32M float32 similarities = 128 MiB per chunk


def rank_gallery(query_feats: torch.Tensor,
                 gallery_feats: torch.Tensor,
                 target_index: Optional[torch.Tensor] = None,
                 exclude_index: Optional[torch.Tensor] = None,
                 subset_index: Optional[torch.Tensor] = None,
                 topk: int = 0,
                 chunk_elems: int = DEFAULT_CHUNK_ELEMS) -> Dict[str, torch.Tensor]:
    """Rank a gallery for each query, in bounded memory.

    Args:
        query_feats (Tensor): [N, D] L2-normalised queries.
        gallery_feats (Tensor): [G, D] L2-normalised gallery features.
        target_index (Tensor, optional): LongTensor[N], the target's gallery index per query;
            -1 = unknown (its rank is then -1). Defaults to None.
        exclude_index (Tensor, optional): LongTensor[N], a gallery index removed from each
            query's ranking (-1 = none). Defaults to None.
        subset_index (Tensor, optional): LongTensor[N, S], a candidate subset per query, ranked
            in the same order as the full gallery (excluded items dropped). Defaults to None.
        topk (int): Length of the returned top-ranked gallery lists (0 = none). Defaults to 0.
        chunk_elems (int): Similarities held at once. Defaults to 2**25.

    Returns:
        dict: ``target_rank`` [N] (if ``target_index``), ``topk_index`` and ``topk_score``
        [N, topk] (cosine similarities; if ``topk``), ``subset_order`` [N, S] (subset gallery
        indices, best first, excluded members moved to the end as -1) and
        ``subset_target_rank`` [N] (if ``subset_index`` and ``target_index``; -1 where the
        target is not in the subset or unknown).
    """
    gallery = _checked_features(query_feats, gallery_feats)
    num_query, num_gallery, device = query_feats.shape[0], gallery.shape[0], gallery.device
    target_index, exclude_index, subset_index = _checked_indices(
        num_query, num_gallery, device, target_index, exclude_index, subset_index)
    num_left = num_gallery - (0 if exclude_index is None else 1)
    if topk > num_left:
        raise ValueError(f'topk={topk} exceeds the {num_left} rankable gallery items')

    wanted = dict(target_rank=target_index is not None, topk_index=topk > 0,
                  topk_score=topk > 0, subset_order=subset_index is not None,
                  subset_target_rank=subset_index is not None and target_index is not None)
    outputs = {key: [] for key, on in wanted.items() if on}
    rows = max(1, chunk_elems // max(num_gallery, 1))
    for start in range(0, num_query, rows):
        part = slice(start, min(start + rows, num_query))
        chunk = _rank_chunk(query_feats[part].to(torch.float32) @ gallery.t(),
                            *(None if i is None else i[part]
                              for i in (target_index, exclude_index, subset_index)), topk)
        for key in outputs:
            outputs[key].append(chunk[key])
    return {key: torch.cat(value) if value else torch.empty(0, dtype=torch.long, device=device)
            for key, value in outputs.items()}


def _checked_features(query_feats: torch.Tensor, gallery_feats: torch.Tensor) -> torch.Tensor:
    """The gallery in float32 on the queries' device, after the shape and finiteness checks."""
    if query_feats.shape[1:] != gallery_feats.shape[1:]:
        raise ValueError(f'query features {tuple(query_feats.shape)} and gallery features '
                         f'{tuple(gallery_feats.shape)} differ in width')
    gallery = gallery_feats.to(device=query_feats.device, dtype=torch.float32)
    # A NaN similarity compares False with everything, which would rank every target first.
    for name, feats in (('query', query_feats), ('gallery', gallery)):
        bad = ~torch.isfinite(feats).all(dim=-1)
        if bad.any():
            raise ValueError(f'{int(bad.sum())} {name} features are not finite (first rows: '
                             f'{bad.nonzero().flatten()[:10].tolist()}); did training diverge?')
    return gallery


def _checked_indices(num_query: int, num_gallery: int, device, target_index, exclude_index,
                     subset_index) -> tuple:
    """The index arguments as long tensors, checked for shape, range and clashes."""

    def as_index(index, name, shape):
        if index is None:
            return None
        index = torch.as_tensor(index, dtype=torch.long, device=device)
        if tuple(index.shape) != shape:
            raise ValueError(f'{name} has shape {tuple(index.shape)}, expected {shape}')
        if index.numel() and (index.max() >= num_gallery or index.min() < -1):
            raise ValueError(f'{name} holds indices outside [-1, {num_gallery})')
        return index

    target_index = as_index(target_index, 'target_index', (num_query, ))
    exclude_index = as_index(exclude_index, 'exclude_index', (num_query, ))
    if subset_index is not None:
        subset_index = torch.as_tensor(subset_index, dtype=torch.long, device=device)
        subset_index = as_index(subset_index, 'subset_index', (num_query, subset_index.shape[-1]))
    if target_index is not None and exclude_index is not None:
        clash = (target_index >= 0) & (target_index == exclude_index)
        if clash.any():
            raise ValueError(f'queries {clash.nonzero().flatten().tolist()[:10]} exclude '
                             'their own target from the ranking')
    return target_index, exclude_index, subset_index


def _rank_chunk(scores: torch.Tensor, target, exclude, subset, topk: int) -> dict:
    """Every requested output for one chunk of queries; ``scores`` [n, G] is modified."""
    rows = torch.arange(scores.shape[0], device=scores.device)
    out = {}
    if exclude is not None:
        has = exclude >= 0
        scores[rows[has], exclude[has]] = float('-inf')
    target_scores = None
    if target is not None:
        target_scores = scores[rows, target.clamp(min=0)].unsqueeze(1)
        rank = (scores > target_scores).sum(dim=1)
        out['target_rank'] = torch.where(target >= 0, rank, -1)
    if topk:
        best = scores.topk(topk, dim=1)
        out['topk_index'], out['topk_score'] = best.indices, best.values
    if subset is not None:
        member_scores = scores.gather(1, subset)
        order = member_scores.argsort(dim=1, descending=True, stable=True)
        dropped = torch.isinf(member_scores.gather(1, order))
        out['subset_order'] = torch.where(dropped, -1, subset.gather(1, order))
        if target_scores is not None:
            in_subset = (subset == target.unsqueeze(1)).any(dim=1) & (target >= 0)
            rank = (member_scores > target_scores).sum(dim=1)
            out['subset_target_rank'] = torch.where(in_subset, rank, -1)
    return out


def recall_at_k(ranks: torch.Tensor, k: int) -> float:
    """100 * share of ranks below k (ranks are 0-based)."""
    if ranks.numel() == 0:
        raise ValueError('recall of an empty query set')
    return 100.0 * int((ranks < k).sum()) / ranks.numel()


def _require_found(ranks: torch.Tensor, what: str) -> None:
    missing = (ranks < 0).nonzero().flatten()
    if missing.numel():
        raise ValueError(f'{missing.numel()} queries have no {what} (first query indices: '
                         f'{missing[:10].tolist()}); recall needs exactly one per query')


def cirr_recalls(query_feats: torch.Tensor,
                 gallery_feats: torch.Tensor,
                 ref_index: torch.Tensor,
                 target_index: torch.Tensor,
                 subset_index: torch.Tensor,
                 topk: Sequence[int] = (1, 5, 10, 50),
                 subset_topk: Sequence[int] = (1, 2, 3),
                 chunk_elems: int = DEFAULT_CHUNK_ELEMS) -> Dict[str, float]:
    """CIRR Recall@K and Recall_subset@K (percent), the reference removed from the ranking.

    Args:
        query_feats (Tensor): [N, D] L2-normalised queries.
        gallery_feats (Tensor): [G, D] L2-normalised gallery (every image of the split).
        ref_index (Tensor): LongTensor[N], the reference's gallery index.
        target_index (Tensor): LongTensor[N], the target's gallery index.
        subset_index (Tensor): LongTensor[N, 6], the ``img_set`` members (reference included).
        topk (Sequence[int]): K of Recall@K. Defaults to (1, 5, 10, 50).
        subset_topk (Sequence[int]): K of Recall_subset@K. Defaults to (1, 2, 3).
        chunk_elems (int): Similarities held at once. Defaults to 2**25.

    Returns:
        dict: ``R@K``, ``Rsubset@K``, ``Avg`` = (R@5 + Rsubset@1) / 2 when both exist, and
        with the default K the release's ``arithmetic_mean``, ``harmonic_mean`` and
        ``geometric_mean`` of the seven (:func:`release_means`).

    Examples:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> from ssn_plugin.evaluation.functional import cirr_recalls
        >>> gallery = F.normalize(torch.randn(60, 16, generator=torch.Generator().manual_seed(0)))
        >>> ref, target = torch.tensor([0, 1]), torch.tensor([2, 3])
        >>> subset = torch.tensor([[0, 2, 4, 5, 6, 7], [1, 3, 4, 5, 6, 7]])
        >>> queries = gallery[target]  # queries that match their targets exactly
        >>> recalls = cirr_recalls(queries, gallery, ref, target, subset)
        >>> recalls['R@1'], recalls['Rsubset@1'], recalls['Avg']
        (100.0, 100.0, 100.0)
    """
    ranked = rank_gallery(query_feats, gallery_feats, target_index=target_index,
                          exclude_index=ref_index, subset_index=subset_index,
                          chunk_elems=chunk_elems)
    return cirr_recalls_from_ranks(ranked['target_rank'], ranked['subset_target_rank'], topk,
                                   subset_topk)


def cirr_recalls_from_ranks(target_rank: torch.Tensor, subset_target_rank: torch.Tensor,
                            topk: Sequence[int] = (1, 5, 10, 50),
                            subset_topk: Sequence[int] = (1, 2, 3)) -> Dict[str, float]:
    """CIRR recalls from 0-based target ranks (see :func:`cirr_recalls`)."""
    _require_found(target_rank, 'target in the gallery')
    _require_found(subset_target_rank, 'target among its img_set members')
    result = {f'R@{k}': recall_at_k(target_rank, k) for k in topk}
    result.update({f'Rsubset@{k}': recall_at_k(subset_target_rank, k) for k in subset_topk})
    if 'R@5' in result and 'Rsubset@1' in result:
        result['Avg'] = (result['R@5'] + result['Rsubset@1']) / 2
    result.update(release_means(result))
    return result


RELEASE_RECALLS = ('R@1', 'R@5', 'R@10', 'R@50', 'Rsubset@1', 'Rsubset@2', 'Rsubset@3')


def release_means(recalls: Dict[str, float]) -> Dict[str, float]:
    """The three means the SSN release selects its CIRR checkpoints by (one each): the
    arithmetic, harmonic and geometric mean of the seven recalls of ``RELEASE_RECALLS``, as
    Python's ``statistics`` defines them (a recall of 0 gives a harmonic and a geometric mean of
    0). Empty unless all seven are there."""
    if not all(key in recalls for key in RELEASE_RECALLS):
        return {}
    values = [recalls[key] for key in RELEASE_RECALLS]
    positive = min(values) > 0
    return dict(arithmetic_mean=statistics.mean(values),
                harmonic_mean=statistics.harmonic_mean(values),
                geometric_mean=statistics.geometric_mean(values) if positive else 0.0)


def fashioniq_recalls(query_feats: torch.Tensor,
                      gallery_feats: torch.Tensor,
                      target_index: torch.Tensor,
                      topk: Sequence[int] = (10, 50),
                      chunk_elems: int = DEFAULT_CHUNK_ELEMS) -> Dict[str, float]:
    """Fashion-IQ Recall@K (percent); the reference stays in the gallery (docs/evaluation.md,
    section 4)."""
    ranked = rank_gallery(query_feats, gallery_feats, target_index=target_index,
                          chunk_elems=chunk_elems)
    _require_found(ranked['target_rank'], 'target in the gallery')
    return {f'R@{k}': recall_at_k(ranked['target_rank'], k) for k in topk}


def recalls_by_group(ranks: Dict[str, torch.Tensor], groups: Sequence[str],
                     topk: Dict[str, Sequence[int]]) -> Dict[str, Dict[str, float]]:
    """Recall@K broken down by a per-query group label.

    Args:
        ranks (dict): name -> 0-based ranks [N] (e.g. ``{'R': target_rank,
            'Rsubset': subset_target_rank}``).
        groups (Sequence[str]): The group of each query.
        topk (dict): name -> the K values to report for that rank kind.

    Returns:
        dict: group -> {``f'{name}@{k}'``: recall, ..., ``'queries'``: count}, groups sorted.
    """
    labels = list(groups)
    result = {}
    for group in sorted(set(labels)):
        mask = torch.tensor([label == group for label in labels])
        row = {f'{name}@{k}': recall_at_k(value[mask], k)
               for name, value in ranks.items() for k in topk[name]}
        row['queries'] = int(mask.sum())
        result[group] = row
    return result


def circo_metrics(query_feats: torch.Tensor,
                  gallery_feats: torch.Tensor,
                  gt_index: torch.Tensor,
                  target_index: Optional[torch.Tensor] = None,
                  ks: Sequence[int] = (5, 10, 25, 50),
                  chunk_elems: int = DEFAULT_CHUNK_ELEMS,
                  semantic_aspects: Optional[Sequence[Sequence[str]]] = None,
                  aspect_k: int = 10) -> Dict[str, float]:
    """CIRCO mAP@K (and Recall@K of the annotated target, mAP@aspect_k per semantic aspect),
    in percent.

    The dataset authors' protocol: the whole gallery is ranked by cosine similarity, the
    reference is **not** removed; AP@K = sum over ranks r <= K that hold a ground truth of
    precision@r, divided by min(#ground truths, K); mAP@K is its mean over queries.

    Args:
        query_feats (Tensor): [N, D] L2-normalised queries.
        gallery_feats (Tensor): [G, D] L2-normalised gallery.
        gt_index (Tensor): LongTensor [N, M], each query's ground-truth gallery indices, padded
            with -1 (at least one per query).
        target_index (Tensor, optional): LongTensor [N], the annotated target (one of the
            ground truths) for Recall@K; None (the test split) skips recall. Defaults to None.
        ks (Sequence[int]): The K values. Defaults to (5, 10, 25, 50).
        chunk_elems (int): Similarities held at once while ranking. Defaults to 2**25.
        semantic_aspects (Sequence[Sequence[str]], optional): Each query's aspects, for the
            per-aspect breakdown of :func:`circo_scores`. Defaults to None.
        aspect_k (int): K of that breakdown. Defaults to 10.

    Returns:
        dict: ``mAP@K`` per K, with ``target_index`` ``R@K``, with ``semantic_aspects``
        ``<aspect>/mAP@<aspect_k>``.

    Examples:
        >>> import torch
        >>> from ssn_plugin.evaluation.functional import circo_metrics
        >>> gallery = torch.eye(4)
        >>> query = torch.tensor([[0.8, 0.6, 0.0, 0.0]])  # ranks images 0, 1, then 2, 3
        >>> circo_metrics(query, gallery, torch.tensor([[1, 3]]), ks=(1, 2))
        {'mAP@1': 0.0, 'mAP@2': 25.0}
    """
    gt_index = checked_gt_index(gt_index, query_feats.shape[0], gallery_feats.shape[0])
    ranked = rank_gallery(query_feats, gallery_feats, target_index=target_index,
                          topk=min(max(ks), gallery_feats.shape[0]), chunk_elems=chunk_elems)
    return circo_scores(ranked['topk_index'].cpu(), gt_index, ks,
                        target_rank=ranked['target_rank'] if target_index is not None else None,
                        semantic_aspects=semantic_aspects, aspect_k=aspect_k)


def circo_scores(topk_index: torch.Tensor,
                 gt_index: torch.Tensor,
                 ks: Sequence[int],
                 target_rank: Optional[torch.Tensor] = None,
                 semantic_aspects: Optional[Sequence[Sequence[str]]] = None,
                 aspect_k: int = 10) -> Dict[str, float]:
    """CIRCO's numbers from a ranking, in percent: what :func:`circo_metrics` and
    :class:`~ssn_plugin.evaluation.CIRCOMetric` both return.

    Args:
        topk_index (Tensor): [N, >= max(ks)] gallery indices, best first.
        gt_index (Tensor): [N, M] ground-truth indices padded with -1 (see
            :func:`checked_gt_index`).
        ks (Sequence[int]): The K values.
        target_rank (Tensor, optional): [N] 0-based rank of the annotated target, for R@K.
            Defaults to None (no recall).
        semantic_aspects (Sequence[Sequence[str]], optional): Each query's aspects; adds
            ``<aspect>/mAP@<aspect_k>``, the mean AP@aspect_k over the queries that have the
            aspect (a query counts for each of its aspects). Defaults to None.
        aspect_k (int): K of the per-aspect breakdown, one of ``ks``. Defaults to 10.

    Returns:
        dict: ``mAP@K`` per K, then ``R@K`` per K, then ``<aspect>/mAP@<aspect_k>`` in sorted
        aspect order.
    """
    ap = circo_average_precision(topk_index, gt_index, ks)
    result = {f'mAP@{k}': 100.0 * float(ap[k].mean()) for k in ks}
    if target_rank is not None:
        _require_found(target_rank, 'target in the gallery')
        result.update({f'R@{k}': recall_at_k(target_rank, k) for k in ks})
    if semantic_aspects is not None:
        if aspect_k not in ap:
            raise ValueError(f'aspect_k={aspect_k} must be one of ks={tuple(ks)}')
        for aspect in sorted({a for aspects in semantic_aspects for a in aspects}):
            rows = torch.tensor([aspect in aspects for aspects in semantic_aspects])
            result[f'{aspect}/mAP@{aspect_k}'] = 100.0 * float(ap[aspect_k][rows].mean())
    return result


def checked_gt_index(gt_index, num_query: int, num_gallery: int) -> torch.Tensor:
    """``gt_index`` as a LongTensor [N, M] after the shape, range and non-empty checks."""
    gt_index = torch.as_tensor(gt_index, dtype=torch.long)
    if gt_index.dim() != 2 or gt_index.shape[0] != num_query:
        raise ValueError(f'gt_index has shape {tuple(gt_index.shape)}, expected ({num_query}, M)')
    if gt_index.numel() and (gt_index.max() >= num_gallery or gt_index.min() < -1):
        raise ValueError(f'gt_index holds indices outside [-1, {num_gallery})')
    num_gt = (gt_index >= 0).sum(dim=1)
    if (num_gt == 0).any():
        raise ValueError(f'queries {(num_gt == 0).nonzero().flatten()[:10].tolist()} have no '
                         'ground truth; mAP needs at least one per query')
    return gt_index


def circo_average_precision(topk_index: torch.Tensor, gt_index: torch.Tensor,
                            ks: Sequence[int]) -> Dict[int, torch.Tensor]:
    """Per-query AP@K from the ranked lists: K -> [N] (fractions, not percent).

    Args:
        topk_index (Tensor): [N, >= max(ks)] gallery indices, best first (shorter only when
            the gallery is smaller).
        gt_index (Tensor): [N, M] ground-truth indices padded with -1 (see
            :func:`checked_gt_index`).
        ks (Sequence[int]): The K values.
    """
    hits = (topk_index.unsqueeze(2) == gt_index.unsqueeze(1)).any(dim=2).float()  # [N, K]
    precision = hits.cumsum(dim=1) / torch.arange(1, topk_index.shape[1] + 1)
    num_gt = (gt_index >= 0).sum(dim=1)
    return {k: (precision[:, :k] * hits[:, :k]).sum(dim=1) / num_gt.clamp(max=k) for k in ks}
