"""Retrieval metrics as MMEngine ``BaseMetric`` wrappers of :mod:`.functional`.

Each metric collects one small record per query in ``process`` (the query feature and its
gallery indices); ``BaseMetric`` gathers them across ranks (dropping the sampler's padded
duplicates) and ``compute_metrics`` calls the pure functions. The gallery features come from
:class:`~ssn_plugin.engine.GalleryFeatureHook`, which encodes the gallery once per evaluation
and hands it to every metric that has ``set_gallery``.
"""
from typing import Dict, List, Optional, Sequence

import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from prettytable import PrettyTable

from ssn_plugin.registry import METRICS
from .functional import DEFAULT_CHUNK_ELEMS, cirr_recalls


class GalleryMetric(BaseMetric):
    """A metric that ranks a gallery set by :meth:`set_gallery` before ``evaluate``."""

    def __init__(self, chunk_elems: int = DEFAULT_CHUNK_ELEMS, collect_device: str = 'cpu',
                 prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.chunk_elems = chunk_elems
        self.gallery_feats: Optional[torch.Tensor] = None
        self.gallery_names: Optional[List[str]] = None

    def set_gallery(self, feats: Optional[torch.Tensor], names: Optional[List[str]]) -> None:
        """Set the gallery features [G, D] and names (None on ranks other than 0)."""
        self.gallery_feats = feats
        self.gallery_names = names

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

    def _log_table(self, title: str, columns: Sequence[str], values: Sequence[float],
                   extra: Optional[Dict[str, object]] = None) -> None:
        table = PrettyTable()
        table.field_names = list(columns) + list(extra or {})
        table.add_row([f'{v:.2f}' for v in values] + list((extra or {}).values()))
        print_log(f'{title}\n{table.get_string()}', logger='current')


@METRICS.register_module()
class CIRRMetric(GalleryMetric):
    """CIRR Recall@{1,5,10,50}, Recall_subset@{1,2,3} and Avg (spec 5.2).

    Reads per query ``query_feat``, ``ref_idx``, ``tgt_idx`` and ``subset_idx`` from the data
    samples. Keys: ``cirr/R@1`` ... ``cirr/Rsubset@3``, ``cirr/Avg`` (use ``save_best=
    'cirr/Avg'``).

    Args:
        topk (Sequence[int]): K of Recall@K. Defaults to (1, 5, 10, 50).
        subset_topk (Sequence[int]): K of Recall_subset@K. Defaults to (1, 2, 3).
        chunk_elems (int): Similarities held at once while ranking. Defaults to 2**25.
        collect_device (str): Device for cross-rank collection. Defaults to 'cpu'.
        prefix (str, optional): Key prefix. Defaults to 'cirr'.
    """

    default_prefix = 'cirr'

    def __init__(self, topk: Sequence[int] = (1, 5, 10, 50),
                 subset_topk: Sequence[int] = (1, 2, 3), **kwargs):
        super().__init__(**kwargs)
        self.topk = tuple(topk)
        self.subset_topk = tuple(subset_topk)

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            self.results.append(dict(
                query_feat=sample['query_feat'].detach().float().cpu(),
                ref_idx=sample['ref_idx'],
                tgt_idx=sample['tgt_idx'],
                subset_idx=torch.as_tensor(sample['subset_idx'])))

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        gallery = self._require_gallery()
        target = torch.as_tensor([r['tgt_idx'] for r in results])
        if (target < 0).any():
            raise ValueError('CIRRMetric needs targets; this split has none (CIRR test1). '
                             'Use the test-server export instead.')
        metrics = cirr_recalls(
            self._stack(results, 'query_feat'), gallery,
            torch.as_tensor([r['ref_idx'] for r in results]), target,
            self._stack(results, 'subset_idx'), self.topk, self.subset_topk, self.chunk_elems)
        self._log_table(f'CIRR recall (%) of {len(results)} queries, gallery of '
                        f'{gallery.shape[0]} images, reference removed:',
                        list(metrics), list(metrics.values()))
        return metrics
