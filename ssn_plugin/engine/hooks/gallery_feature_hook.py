"""Encode the evaluation gallery once before each validation and test."""
import time
from typing import Optional

import torch
from mmengine.dist import collect_results, get_rank
from mmengine.hooks import Hook
from mmengine.logging import print_log

from ssn_plugin.registry import HOOKS


def encode_gallery(runner, dataset, batch_size: int, num_workers: int = 0):
    """Encode a gallery dataset with ``runner.model`` on every rank; gather on rank 0.

    Each rank encodes its share (``DefaultSampler``, no shuffle); the features are collected
    with their ``gallery_index`` and written into a [G, D] tensor by index, so the sampler's
    padded duplicates overwrite themselves instead of being counted twice.

    Returns:
        Tensor | None: the [G, D] float32 gallery features on rank 0, None elsewhere.
    """
    loader = runner.build_dataloader(
        dict(dataset=dataset, batch_size=batch_size, num_workers=num_workers,
             sampler=dict(type='DefaultSampler', shuffle=False),
             collate_fn=dict(type='pseudo_collate')),
        seed=runner.seed)
    model = runner.model
    was_training = model.training
    model.eval()
    records = []
    with torch.no_grad():
        for data in loader:
            for sample in model.test_step(data):
                records.append((sample.gallery_index, sample.gallery_feat.float().cpu()))
    model.train(was_training)
    gathered = collect_results(records, len(dataset), device='cpu')
    if get_rank() != 0:
        return None
    feats = torch.empty(len(dataset), gathered[0][1].shape[-1])
    seen = torch.zeros(len(dataset), dtype=torch.bool)
    for index, feat in gathered:
        feats[index] = feat
        seen[index] = True
    if not seen.all():
        raise RuntimeError(f'gallery encoding missed {int((~seen).sum())} of {len(dataset)} '
                           'images; the sampler must cover the whole gallery')
    return feats


@HOOKS.register_module()
class GalleryFeatureHook(Hook):
    """Encode the evaluation dataset's gallery once before each validation and test.

    The gallery comes from the evaluation dataset's ``gallery_dataset()`` (for CIRR: every
    image of the split file, in file order). Its features are handed to each metric that has
    ``set_gallery`` (:class:`~ssn_plugin.evaluation.GalleryMetric`); queries are then encoded
    by the normal val/test loop, and the metric ranks them against this cache.

    Args:
        batch_size (int, optional): Gallery batch size; None = the evaluation loader's.
            Defaults to None.
        num_workers (int, optional): Gallery loader workers; None = the evaluation loader's.
            Defaults to None.
    """

    priority = 'NORMAL'

    def __init__(self, batch_size: Optional[int] = None, num_workers: Optional[int] = None):
        self.batch_size = batch_size
        self.num_workers = num_workers

    def _prepare(self, runner, loop) -> None:
        metrics = [m for m in loop.evaluator.metrics if hasattr(m, 'set_gallery')]
        dataset = loop.dataloader.dataset
        if not metrics:
            return
        if not hasattr(dataset, 'gallery_dataset'):
            raise TypeError(f'{type(dataset).__name__} has no gallery_dataset(); '
                            'GalleryFeatureHook needs a CIR dataset')
        gallery = dataset.gallery_dataset()
        batch_size = self.batch_size or loop.dataloader.batch_size
        num_workers = (loop.dataloader.num_workers
                       if self.num_workers is None else self.num_workers)
        start = time.perf_counter()
        feats = encode_gallery(runner, gallery, batch_size, num_workers)
        print_log(f'Encoded the gallery: {len(gallery)} images in '
                  f'{time.perf_counter() - start:.1f} s', logger='current')
        names = paths = None
        if feats is not None:
            names = dataset.gallery_names
            paths = [entry['img_path'] for entry in dataset.gallery]
        for metric in metrics:
            metric.set_gallery(feats, names, paths)

    def before_val_epoch(self, runner) -> None:
        self._prepare(runner, runner.val_loop)

    def before_test_epoch(self, runner) -> None:
        self._prepare(runner, runner.test_loop)
