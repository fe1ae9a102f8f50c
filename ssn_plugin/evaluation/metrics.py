"""Retrieval metrics as MMEngine ``BaseMetric`` wrappers of :mod:`.functional`.

Each metric collects one small record per query in ``process`` (the query feature and its
gallery indices); ``BaseMetric`` gathers them across ranks (dropping the sampler's padded
duplicates) and ``compute_metrics`` calls the pure functions. The gallery features come from
:class:`~ssn_plugin.engine.GalleryFeatureHook`, which encodes the gallery once per evaluation
and hands it to every metric that has ``set_gallery``.
"""
import logging
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence

import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from prettytable import PrettyTable

from ssn_plugin.registry import METRICS
from ssn_plugin.visualization import draw_retrieval_grid
from .functional import (DEFAULT_CHUNK_ELEMS, checked_gt_index, circo_scores,
                         cirr_recalls_from_ranks, fashioniq_recalls, rank_gallery,
                         recall_at_k, recalls_by_group)
from .submissions import write_circo_submission, write_cirr_submission

class GalleryMetric(BaseMetric):
    """A metric that ranks queries against a gallery set by :meth:`set_gallery`.

    The contract between dataset, hook, model and metric:

    * the gallery: :class:`~ssn_plugin.engine.GalleryFeatureHook` calls :meth:`set_gallery`
      before each validation/test with the [G, D] features of the evaluation dataset's
      ``gallery_dataset()`` (row i = ``dataset.gallery[i]``), the gallery names and paths;
    * each query: ``process`` reads the data-sample fields in :attr:`READS` (``query_feat`` is
      set by the model's ``predict``; the rest are item keys the dataset packs, its
      ``META_KEYS``) and, with ``show_dir``, those in :attr:`SHOW_READS`.
      ``ref_index``/``target_index`` are gallery rows, -1 where unknown.

    Args:
        chunk_elems (int): Similarities held at once while ranking. Defaults to 2**25.
        show_dir (str, optional): Write retrieval pictures of the first ``show_num`` queries
            here. Defaults to None.
        show_num (int): Queries to draw. Defaults to 8.
        show_topk (int): Results per picture. Defaults to 5.
        collect_device (str): Device for cross-rank collection. Defaults to 'cpu'.
        prefix (str, optional): Key prefix. Defaults to the subclass's ``default_prefix``.
    """

    READS = ('query_feat', 'ref_index', 'target_index')
    SHOW_READS = ('ref_img_path', 'text', 'tgt_name', 'sample_idx')

    def __init__(self, chunk_elems: int = DEFAULT_CHUNK_ELEMS, show_dir: Optional[str] = None,
                 show_num: int = 8, show_topk: int = 5, collect_device: str = 'cpu',
                 prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.chunk_elems = chunk_elems
        self.show_dir = show_dir
        self.show_num = show_num
        self.show_topk = show_topk
        self.gallery_feats: Optional[torch.Tensor] = None
        self.gallery_names: Optional[List[str]] = None
        self.gallery_paths: Optional[List[str]] = None

    def set_gallery(self, feats: Optional[torch.Tensor], names: Optional[List[str]],
                    paths: Optional[List[str]] = None) -> None:
        """Set the gallery features [G, D], names and image paths (None off rank 0)."""
        self.gallery_feats = feats
        self.gallery_names = names
        self.gallery_paths = paths

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        """Keep one small record per query: its feature, indices and :meth:`_record`."""
        for sample in data_samples:
            self.results.append(dict(
                query_feat=sample['query_feat'].detach().float().cpu(),
                ref_index=sample['ref_index'], target_index=sample['target_index'],
                **self._record(sample), **self._show_record(sample)))

    def _record(self, sample: dict) -> dict:
        """Dataset-specific fields of a query record."""
        return {}

    def _show_record(self, sample: dict) -> dict:
        """What a retrieval picture needs (recorded only when ``show_dir`` is set)."""
        if not self.show_dir:
            return {}
        return {key: sample.get(key) for key in self.SHOW_READS}

    def _show(self, topk_rows: Sequence[tuple]) -> None:
        """Write a retrieval grid per query (reference, text, top-k, ground truth framed)."""
        if self.gallery_paths is None:
            raise RuntimeError('showing results needs the gallery image paths')
        os.makedirs(self.show_dir, exist_ok=True)
        for record, row, scores in topk_rows:
            items = [(self.gallery_paths[i], self.gallery_names[i], s)
                     for i, s in zip(row, scores)]
            grid = draw_retrieval_grid(record['ref_img_path'], record['text'], items,
                                       ground_truth=record.get('tgt_name'))
            grid.save(osp.join(self.show_dir, f'query_{record["sample_idx"]:06d}.png'))
        print_log(f'Wrote {len(topk_rows)} retrieval pictures to {self.show_dir}',
                  logger='current')

    def _show_topk(self, results: List[dict], gallery: torch.Tensor, exclude: bool,
                   offset_key: Optional[str] = None) -> list:
        """Top ``show_topk`` (indices, scores) of the first ``show_num`` queries."""
        rows = []
        for record in results[:self.show_num]:
            start, stop = record[offset_key] if offset_key else (0, gallery.shape[0])
            excl = torch.tensor([record['ref_index'] - start]) if exclude else None
            rankable = stop - start - (1 if exclude else 0)
            ranked = rank_gallery(record['query_feat'][None], gallery[start:stop],
                                  exclude_index=excl, topk=min(self.show_topk, rankable))
            rows.append((record, (ranked['topk_index'][0] + start).tolist(),
                         ranked['topk_score'][0].tolist()))
        return rows

    def _require_gallery(self) -> torch.Tensor:
        if self.gallery_feats is None:
            raise RuntimeError(
                f'{type(self).__name__} has no gallery features: add '
                "dict(type='GalleryFeatureHook') to custom_hooks so that the gallery is "
                'encoded before each validation/test.')
        return self.gallery_feats

    @staticmethod
    def _stack(results: List[dict], key: str) -> torch.Tensor:
        return torch.stack([torch.as_tensor(r[key]) for r in results])

    def _group_breakdown(self, ranks: Dict[str, torch.Tensor], groups: Sequence[str],
                         topk: Dict[str, Sequence[int]], title: str) -> Dict[str, float]:
        """Recall per query group (:func:`recalls_by_group`), logged under ``title`` as one row
        per group and returned as ``<group>/<name>@K``."""
        by_group = recalls_by_group(ranks, groups, topk)
        columns = [f'{name}@{k}' for name, ks in topk.items() for k in ks]
        table = PrettyTable(['group', 'queries'] + columns)
        flat = {}
        for group, row in by_group.items():
            table.add_row([group, row['queries']] + [f'{row[c]:.2f}' for c in columns])
            flat.update({f'{group}/{c}': row[c] for c in columns})
        print_log(f'{title}:\n{table.get_string()}', logger='current')
        return flat

    def _log_table(self, title: str, columns: Sequence[str], values: Sequence[float],
                   extra: Optional[Dict[str, object]] = None) -> None:
        table = PrettyTable()
        table.field_names = list(columns) + list(extra or {})
        table.add_row([f'{v:.2f}' for v in values] + list((extra or {}).values()))
        print_log(f'{title}\n{table.get_string()}', logger='current')


@METRICS.register_module()
class CIRRMetric(GalleryMetric):
    """CIRR Recall@{1,5,10,50}, Recall_subset@{1,2,3} and Avg (docs/evaluation.md,
    section 2), and the test-server export (section 3).

    Reads per query ``query_feat``, ``pairid``, ``ref_index``, ``target_index`` and ``subset_index``
    from the data samples. Keys: ``cirr/R@1`` ... ``cirr/Rsubset@3``, ``cirr/Avg`` (use
    ``save_best='cirr/Avg'``). On a split without targets (test1) no recall exists; set
    ``export_dir`` to write the submission files.

    With ``export_dir`` set, writes ``recall_submission_<name>.json`` (top-50 gallery names
    per pairid) and ``recall_subset_submission_<name>.json`` (top-3 ``img_set`` members), the
    reference excluded from both, in the format of the CIRR server; on val the recalls can be
    recomputed from those lists to check them before uploading.

    Args:
        topk (Sequence[int]): K of Recall@K. Defaults to (1, 5, 10, 50).
        subset_topk (Sequence[int]): K of Recall_subset@K. Defaults to (1, 2, 3).
        export_dir (str, optional): Where to write the submission files. Defaults to None.
        export_name (str): The ``<name>`` in the file names. Defaults to 'ssn'.
        **kwargs: :class:`GalleryMetric`'s (``chunk_elems``, ``show_dir``, ``show_num``,
            ``show_topk``, ``collect_device``, ``prefix``, default ``'cirr'``).

    Examples:
        >>> import torch
        >>> from ssn_plugin.evaluation import CIRRMetric
        >>> gallery = torch.eye(8)  # 8 gallery images, one-hot features
        >>> metric = CIRRMetric()
        >>> metric.set_gallery(gallery, [f'img{i}' for i in range(8)])
        >>> metric.process(None, [  # what the model's predict leaves on two query samples
        ...     dict(query_feat=gallery[2], ref_index=0, target_index=2, pairid=10,
        ...          subset_index=[0, 1, 2, 3, 4, 5]),
        ...     dict(query_feat=(gallery[1] + gallery[3]) / 2 ** 0.5, ref_index=1,
        ...          target_index=3, pairid=11, subset_index=[1, 2, 3, 4, 5, 6])])
        >>> metrics = metric.evaluate(2)
        >>> metrics['cirr/R@1'], metrics['cirr/Rsubset@1']  # query 11's reference is removed
        (100.0, 100.0)
    """

    default_prefix = 'cirr'
    READS = GalleryMetric.READS + ('pairid', 'subset_index', 'group')
    EXPORT_TOPK = 50
    EXPORT_SUBSET_TOPK = 3

    def __init__(self, topk: Sequence[int] = (1, 5, 10, 50),
                 subset_topk: Sequence[int] = (1, 2, 3), export_dir: Optional[str] = None,
                 export_name: str = 'ssn', **kwargs):
        super().__init__(**kwargs)
        self.topk = tuple(topk)
        self.subset_topk = tuple(subset_topk)
        self.export_dir = export_dir
        self.export_name = export_name

    def _record(self, sample: dict) -> dict:
        return dict(pairid=sample['pairid'], subset_index=torch.as_tensor(sample['subset_index']),
                    group=sample.get('group'))

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        gallery = self._require_gallery()
        has_targets = self._has_targets(results)
        ranked = self._rank(results, gallery, has_targets)
        metrics = self._recalls(results, ranked, gallery.shape[0]) if has_targets else {}
        if self.export_dir:
            metrics['exported_queries'] = float(self._export(results, ranked))
        if self.show_dir:
            self._show(self._show_topk(results, gallery, exclude=True))
        return metrics

    def _has_targets(self, results: List[dict]) -> bool:
        has_targets = all(r['target_index'] >= 0 for r in results)
        if not has_targets and self.export_dir is None:
            raise ValueError('CIRRMetric: this split has no targets (CIRR test1), so no recall '
                             'can be computed; set export_dir to write the test-server files.')
        return has_targets

    def _rank(self, results: List[dict], gallery: torch.Tensor, has_targets: bool) -> dict:
        """Target ranks (reference removed), subset order and, to export, the top-50."""
        target = torch.as_tensor([r['target_index'] for r in results])
        return rank_gallery(
            self._stack(results, 'query_feat'), gallery,
            target_index=target if has_targets else None,
            exclude_index=torch.as_tensor([r['ref_index'] for r in results]),
            subset_index=self._stack(results, 'subset_index'),
            topk=min(self.EXPORT_TOPK, gallery.shape[0] - 1) if self.export_dir else 0,
            chunk_elems=self.chunk_elems)

    def _recalls(self, results: List[dict], ranked: dict, gallery_size: int) -> dict:
        """Recall@K, Recall_subset@K and Avg, logged; per group when the queries have one."""
        metrics = cirr_recalls_from_ranks(ranked['target_rank'], ranked['subset_target_rank'],
                                          self.topk, self.subset_topk)
        self._log_table(f'CIRR recall (%) of {len(results)} queries, gallery of '
                        f'{gallery_size} images, reference removed:',
                        list(metrics), list(metrics.values()))
        if all(r['group'] is not None for r in results):
            metrics.update(self._group_breakdown(
                {'R': ranked['target_rank'], 'Rsubset': ranked['subset_target_rank']},
                [r['group'] for r in results], {'R': self.topk, 'Rsubset': self.subset_topk},
                'CIRR recall (%) by query group'))
        return metrics

    def _export(self, results: List[dict], ranked: dict) -> int:
        """Write the test-server files; returns the number of queries exported."""
        names = self.gallery_names
        if len(names) - 1 < self.EXPORT_TOPK:
            print_log(f'The gallery has {len(names)} images: the exported lists hold '
                      f'{len(names) - 1} names, not the {self.EXPORT_TOPK} the CIRR server '
                      'expects.', logger='current', level=logging.WARNING)
        top = [[names[i] for i in row] for row in ranked['topk_index'].tolist()]
        subset = [[names[i] for i in row if i >= 0][:self.EXPORT_SUBSET_TOPK]
                  for row in ranked['subset_order'].tolist()]
        paths = write_cirr_submission(self.export_dir, self.export_name,
                                      [r['pairid'] for r in results], top, subset)
        print_log(f'CIRR submission files for {len(results)} queries: {paths}',
                  logger='current')
        return len(results)

@METRICS.register_module()
class FashionIQMetric(GalleryMetric):
    """Fashion-IQ Recall@10/50 per category, their averages and the overall score
    (docs/evaluation.md, section 4).

    Each query is ranked against its own category's gallery (``gallery_range`` of the
    sample); the reference stays in the gallery. Keys (prefix ``fiq``): ``<cat>_R@10``,
    ``<cat>_R@50``, ``avg_R@10``, ``avg_R@50`` (unweighted means over categories) and
    ``overall`` = (avg R@10 + avg R@50) / 2 (use ``save_best='fiq/overall'``). The logged
    table also gives the gallery protocol and, per category, the number of queries evaluated
    and the gallery size.

    Args:
        topk (Sequence[int]): K of Recall@K. Defaults to (10, 50).
        **kwargs: :class:`GalleryMetric`'s (``chunk_elems``, ``show_dir``, ``show_num``,
            ``show_topk``, ``collect_device``, ``prefix``, default ``'fiq'``).
    """

    default_prefix = 'fiq'
    READS = GalleryMetric.READS + ('category', 'gallery_range')
    ORDER = ('dress', 'shirt', 'toptee')

    def __init__(self, topk: Sequence[int] = (10, 50), **kwargs):
        super().__init__(**kwargs)
        self.topk = tuple(topk)

    def _record(self, sample: dict) -> dict:
        return dict(category=sample['category'], gallery_range=tuple(sample['gallery_range']))

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        gallery = self._require_gallery()
        if any(r['target_index'] < 0 for r in results):
            raise ValueError('FashionIQMetric needs targets; the test split has none.')
        present = {r['category'] for r in results}
        categories = [c for c in self.ORDER if c in present] + sorted(present - set(self.ORDER))
        metrics, sizes = {}, {}
        for category in categories:
            rows = [r for r in results if r['category'] == category]
            start, stop = rows[0]['gallery_range']
            target = torch.as_tensor([r['target_index'] for r in rows]) - start
            recalls = fashioniq_recalls(self._stack(rows, 'query_feat'), gallery[start:stop],
                                        target, self.topk, self.chunk_elems)
            metrics.update({f'{category}_{k}': v for k, v in recalls.items()})
            sizes[category] = (len(rows), stop - start)
        for k in self.topk:
            metrics[f'avg_R@{k}'] = sum(metrics[f'{c}_R@{k}'] for c in categories) / len(
                categories)
        metrics['overall'] = sum(metrics[f'avg_R@{k}'] for k in self.topk) / len(self.topk)
        protocol = (self.dataset_meta or {}).get('gallery_protocol', 'unknown')
        extra = {f'{c} queries / gallery': f'{n} / {g}' for c, (n, g) in sizes.items()}
        self._log_table(f'Fashion-IQ recall (%), gallery protocol "{protocol}", reference kept '
                        'in the gallery:', list(metrics), list(metrics.values()), extra)
        if self.show_dir:
            self._show(self._show_topk(results, gallery, exclude=False,
                                       offset_key='gallery_range'))
        return metrics


@METRICS.register_module()
class CIRCOMetric(GalleryMetric):
    """CIRCO mAP@{5,10,25,50}, Recall@K of the annotated target, mAP@10 per semantic aspect
    (docs/evaluation.md, section 5), and the test-server export.

    The dataset authors' protocol: the whole gallery is ranked by cosine similarity and the
    reference is **not** removed (unlike CIRR). Reads per query ``query_feat``, ``query_id``,
    ``ref_index``, ``target_index``, ``gt_index`` and ``semantic_aspects``. Keys (prefix
    ``circo``): ``mAP@K``, ``R@K`` and ``<aspect>/mAP@10`` (use ``save_best='circo/mAP@10'``).
    On test (no ground truth) set ``export_dir``: ``circo_submission_<name>.json`` then holds
    the top-50 COCO ids of every query.

    Args:
        ks (Sequence[int]): K values. Defaults to (5, 10, 25, 50).
        aspect_k (int): K of the per-aspect breakdown. Defaults to 10.
        export_dir (str, optional): Where to write the submission file. Defaults to None.
        export_name (str): The ``<name>`` in the file name. Defaults to 'ssn'.
        **kwargs: :class:`GalleryMetric`'s (``chunk_elems``, ``show_dir``, ...; prefix
            ``'circo'``).
    """

    default_prefix = 'circo'
    READS = GalleryMetric.READS + ('query_id', 'gt_index', 'semantic_aspects')
    EXPORT_TOPK = 50

    def __init__(self, ks: Sequence[int] = (5, 10, 25, 50), aspect_k: int = 10,
                 export_dir: Optional[str] = None, export_name: str = 'ssn', **kwargs):
        super().__init__(**kwargs)
        self.ks = tuple(ks)
        if aspect_k not in self.ks:
            raise ValueError(f'aspect_k={aspect_k} must be one of ks={self.ks}')
        self.aspect_k = aspect_k
        self.export_dir = export_dir
        self.export_name = export_name

    def _record(self, sample: dict) -> dict:
        return dict(query_id=sample['query_id'], gt_index=list(sample['gt_index']),
                    semantic_aspects=list(sample['semantic_aspects']))

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        gallery = self._require_gallery()
        has_targets = all(r['target_index'] >= 0 for r in results)
        if not has_targets and self.export_dir is None:
            raise ValueError('CIRCOMetric: this split has no ground truth (CIRCO test), so no '
                             'mAP can be computed; set export_dir to write the test-server file.')
        depth = max(self.ks + ((self.EXPORT_TOPK, ) if self.export_dir else ()))
        if depth > gallery.shape[0]:
            raise ValueError(f'the gallery has {gallery.shape[0]} images; CIRCO ranks the top '
                             f'{depth}')
        target = torch.as_tensor([r['target_index'] for r in results])
        ranked = rank_gallery(self._stack(results, 'query_feat'), gallery,
                              target_index=target if has_targets else None, topk=depth,
                              chunk_elems=self.chunk_elems)
        top = ranked['topk_index'].cpu()
        metrics = self._scores(results, ranked, top, gallery.shape[0]) if has_targets else {}
        if self.export_dir:
            names = self.gallery_names
            path = osp.join(self.export_dir, f'circo_submission_{self.export_name}.json')
            write_circo_submission(path, [r['query_id'] for r in results],
                                   [[int(names[i]) for i in row[:self.EXPORT_TOPK]]
                                    for row in top.tolist()])
            print_log(f'CIRCO submission file for {len(results)} queries: {path}',
                      logger='current')
            metrics['exported_queries'] = float(len(results))
        if self.show_dir:
            self._show(self._show_topk(results, gallery, exclude=False))
        return metrics

    def _scores(self, results: List[dict], ranked: dict, top: torch.Tensor,
                gallery_size: int) -> Dict[str, float]:
        width = max(len(r['gt_index']) for r in results)
        gt_index = checked_gt_index(
            [r['gt_index'] + [-1] * (width - len(r['gt_index'])) for r in results],
            len(results), gallery_size)
        aspects = [r['semantic_aspects'] for r in results]
        metrics = circo_scores(top, gt_index, self.ks, target_rank=ranked['target_rank'],
                               semantic_aspects=aspects, aspect_k=self.aspect_k)
        overall = [k for k in metrics if '/' not in k]
        template = (self.dataset_meta or {}).get('text_template', 'unknown')
        self._log_table(f'CIRCO (%) of {len(results)} queries, gallery of {gallery_size} '
                        f'images, reference kept in the gallery, text "{template}":',
                        overall, [metrics[k] for k in overall])
        by_aspect = [k for k in metrics if '/' in k]
        if by_aspect:
            table = PrettyTable(['semantic aspect', 'queries', f'mAP@{self.aspect_k}'])
            for key in by_aspect:
                aspect = key.split('/')[0]
                table.add_row([aspect, sum(aspect in a for a in aspects), f'{metrics[key]:.2f}'])
            print_log(f'CIRCO mAP@{self.aspect_k} (%) by semantic aspect (a query counts for '
                      f'each of its aspects):\n{table.get_string()}', logger='current')
        return metrics


@METRICS.register_module()
class TripletRecallMetric(GalleryMetric):
    """Recall@K of your own triplets (:class:`~ssn_plugin.datasets.CustomCIRDataset`), per
    query group too, through CIRR's ranking code.

    Each query ranks the whole gallery by cosine similarity, its reference left out when the
    dataset's ``exclude_reference`` (in ``dataset_meta``; default True) says so, exactly as
    :class:`CIRRMetric` ranks. Keys (prefix ``triplets``): ``R@K`` for each K, ``mean_R``
    (their unweighted mean; use ``save_best='triplets/mean_R'``) and, when every query has a
    ``group``, ``<group>/R@K``.

    Args:
        topk (Sequence[int]): K of Recall@K. Defaults to (1, 5, 10, 50).
        **kwargs: :class:`GalleryMetric`'s (``chunk_elems``, ``show_dir``, ``show_num``,
            ``show_topk``, ``collect_device``, ``prefix``, default ``'triplets'``).
    """

    default_prefix = 'triplets'
    READS = GalleryMetric.READS + ('group', )

    def __init__(self, topk: Sequence[int] = (1, 5, 10, 50), **kwargs):
        super().__init__(**kwargs)
        self.topk = tuple(topk)

    def _record(self, sample: dict) -> dict:
        return dict(group=sample.get('group'))

    @property
    def exclude_reference(self) -> bool:
        return bool((self.dataset_meta or {}).get('exclude_reference', True))

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        gallery = self._require_gallery()
        exclude = self.exclude_reference
        ranked = rank_gallery(
            self._stack(results, 'query_feat'), gallery,
            target_index=torch.as_tensor([r['target_index'] for r in results]),
            exclude_index=(torch.as_tensor([r['ref_index'] for r in results]) if exclude
                           else None),
            chunk_elems=self.chunk_elems)
        ranks = ranked['target_rank']
        if bool((ranks < 0).any()):
            raise ValueError(f'{int((ranks < 0).sum())} queries have no target in the gallery')
        metrics = {f'R@{k}': recall_at_k(ranks, k) for k in self.topk}
        metrics['mean_R'] = sum(metrics.values()) / len(self.topk)
        where = 'reference removed' if exclude else 'reference kept'
        self._log_table(f'Recall (%) of {len(results)} queries, gallery of {gallery.shape[0]} '
                        f'images, {where}:', list(metrics), list(metrics.values()))
        if all(r['group'] is not None for r in results):
            metrics.update(self._group_breakdown({'R': ranks}, [r['group'] for r in results],
                                                 {'R': self.topk}, 'Recall (%) by query group'))
        if self.show_dir:
            self._show(self._show_topk(results, gallery, exclude=exclude))
        return metrics
