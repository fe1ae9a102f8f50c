"""Reseed every training epoch from (seed, epoch, rank): resume = never stopped."""
import random

import numpy as np
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook

from ssn_plugin.registry import HOOKS


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

    The seed of an epoch is ``seed + 1000 * epoch + 1_000_003 * rank`` (0 for a run without a
    seed; numpy's mod 2**32, its range), kept across versions so that a run resumed with a
    later version repeats the same epoch.
    """

    priority = 'VERY_HIGH'

    def before_train_epoch(self, runner) -> None:
        seed = (runner.seed if runner.seed is not None else 0) + 1000 * runner.epoch
        seed += 1_000_003 * get_rank()
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)  # also seeds every CUDA device
