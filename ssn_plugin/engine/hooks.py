"""Hooks: gallery feature preparation before evaluation, tower freezing."""
import random
import time
from typing import Optional

import numpy as np
import torch
from mmengine.dist import collect_results, get_rank
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from ssn_plugin.datasets.base import pipeline_transforms
from ssn_plugin.datasets.image_cache import CACHEABLE
from ssn_plugin.datasets.transforms import fill_image_size
from ssn_plugin.registry import HOOKS
from .checkpoint import check_checkpoint_fits, install_checkpoint_loader


def _unwrap(model):
    return model.module if is_model_wrapper(model) else model


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


@HOOKS.register_module()
class SafeCheckpointLoaderHook(Hook):
    """Load checkpoints through :func:`~ssn_plugin.engine.load_local_checkpoint`, and only
    checkpoints that fit the model.

    ``before_run`` comes before the Runner loads (``load_from``) or resumes a checkpoint, in
    ``train()`` and ``test()`` alike, so every checkpoint a run reads is loaded with
    ``weights_only=True`` on any torch version. Every loaded checkpoint is then checked against
    the model (:func:`~ssn_plugin.engine.checkpoint.check_checkpoint_fits`).

    Args:
        strict (bool): Refuse a checkpoint with missing, unexpected or differently shaped
            tensors. False lets mmengine load the matching part (it warns). Defaults to True.
    """

    priority = 'VERY_HIGH'

    def __init__(self, strict: bool = True):
        self.strict = strict

    def before_run(self, runner) -> None:
        install_checkpoint_loader()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.strict:
            check_checkpoint_fits(_unwrap(runner.model), checkpoint.get('state_dict', checkpoint))


@HOOKS.register_module()
class EpochSeedHook(Hook):
    """Reseed Python, numpy and torch (CPU and CUDA) at the start of every training epoch from
    (the run's seed, the epoch, the rank).

    An epoch's randomness (dropout, the data loader's worker seeds, random transforms in the
    main process) then depends on nothing that happened before it: not on validation, not on
    whether the run was stopped. A run killed at any point and resumed with ``--resume``
    repeats the interrupted epoch from the last checkpoint exactly as the uninterrupted run
    did, so on CPU it ends with bit-identical weights and metrics (tested). The checkpoint
    carries all this needs: the model, optimizer, schedulers, message hub, the seed and the
    epoch. Persistent data-loader workers keep their own random state across epochs, so a
    pipeline with random transforms (Fashion-IQ's captions) needs ``persistent_workers=False``
    for this. On a GPU, non-deterministic kernels (atomics in backward) still make two runs
    differ in the last bits unless ``randomness.deterministic=True``.
    """

    priority = 'VERY_HIGH'

    def before_train_epoch(self, runner) -> None:
        seed = (runner.seed if runner.seed is not None else 0) + 1000 * runner.epoch
        seed += 1_000_003 * get_rank()
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)  # also seeds every CUDA device


@HOOKS.register_module()
class ImageSizeFromModelHook(Hook):
    """Give the pipelines the model's input resolution before each train / val / test run.

    Resize transforms whose ``size`` is unset (``CLIPResizeCrop()``, as in the recipes) get
    ``model.image_size``, in the loop's dataset pipeline and in its gallery pipeline, so one
    config serves a 224 px and a 336 px model without pipeline edits. Explicit sizes are kept.
    It runs before the loop iterates its data loader, so worker processes see the filled-in
    transforms, and (priority ``ABOVE_NORMAL``) before :class:`GalleryFeatureHook` builds the
    gallery.

    Then, as the cached pixels depend on that size, it prepares the dataset's image caches
    (``image_cache`` of the CIR datasets): it opens them, building a missing one first when
    ``build_caches`` (on the main process, the others wait), and stops on a stale one.

    Args:
        build_caches (bool): Build a missing image cache on first use. False: a missing cache
            is an error that says how to build it. Defaults to True.
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self, build_caches: bool = True):
        self.build_caches = build_caches

    def _fill(self, runner, loop, name: str) -> None:
        model = _unwrap(runner.model)
        size = getattr(model, 'image_size', None)
        if size is None:
            return
        dataset = loop.dataloader.dataset
        if fill_image_size(pipeline_transforms(dataset), size):
            print_log(f'{name} pipelines: image size {tuple(size)} taken from the model',
                      logger='current')
        if hasattr(dataset, 'prepare_image_caches') and dataset.prepare_image_caches(
                build=self.build_caches):
            print_log(f'{name} pipelines read preprocessed images from {dataset.image_cache}',
                      logger='current')

    def before_train(self, runner) -> None:
        self._fill(runner, runner.train_loop, 'train')

    def before_val(self, runner) -> None:
        self._fill(runner, runner.val_loop, 'val')

    def before_test(self, runner) -> None:
        self._fill(runner, runner.test_loop, 'test')


@HOOKS.register_module()
class FreezeVisionTowerHook(Hook):
    """Freeze the CLIP vision tower from a given epoch on (the release's Fashion-IQ recipe).

    The release fine-tunes both towers in epoch 0 and only the text tower afterwards. The hook
    runs before every training epoch, so a resumed run freezes too. Under DDP set
    ``find_unused_parameters=True``: the frozen parameters stop receiving gradients.

    With the backbone's ``feature_cache`` on, the frozen tower's outputs are reused by image
    file; that is only right when the training pipeline gives an image the same pixels every
    time, so the hook refuses a training pipeline with any other transform than
    :data:`DETERMINISTIC`.

    Args:
        epoch (int): First (0-based) epoch with a frozen vision tower. Defaults to 1.
    """

    priority = 'NORMAL'
    #: Transforms that give an image file the same pixels every time: the image cache's
    #: cacheable ones, its lookup, packing and the caption composer (text only).
    DETERMINISTIC = tuple(t.__name__ for t in CACHEABLE) + (
        'CachedCIRImages', 'PackCIRInputs', 'ComposeFIQCaption')

    def __init__(self, epoch: int = 1):
        self.epoch = epoch

    def before_train(self, runner) -> None:
        if getattr(_unwrap(runner.model).clip, 'feature_cache', None) is None:
            return
        pipeline = getattr(runner.train_dataloader.dataset, 'pipeline', None)
        names = [type(t).__name__ for t in getattr(pipeline, 'transforms', [])]
        other = [n for n in names if n not in self.DETERMINISTIC]
        if other:
            raise ValueError(
                f'the backbone\'s feature_cache reuses the frozen image tower\'s outputs per '
                f'image file, but the training pipeline has {other}, which may change an '
                f'image between epochs; set feature_cache=False or use only {self.DETERMINISTIC}')

    def before_train_epoch(self, runner) -> None:
        if runner.epoch < self.epoch:
            return
        model = _unwrap(runner.model)
        params = model.clip.vision_parameters()
        if any(p.requires_grad for p in params):
            model.clip.set_trainable(vision=False)
            cached = (' Its outputs are cached per image from now on (feature_cache).'
                      if getattr(model.clip, 'feature_cache', None) is not None else '')
            print_log(f'Epoch {runner.epoch}: froze the CLIP vision tower ({len(params)} '
                      'tensors); only the text tower of CLIP is fine-tuned from now on.'
                      + cached, logger='current')

    def after_train_epoch(self, runner) -> None:
        cache = getattr(_unwrap(runner.model).clip, 'feature_cache', None)
        if cache is not None and len(cache):
            print_log(f'Epoch {runner.epoch}: feature cache holds {len(cache)} images; '
                      f'{cache.hits} image encodings reused, {cache.misses} computed so far',
                      logger='current')
