"""FreezeVisionTowerHook freezes exactly the vision tower, from the configured epoch, and
guards the feature cache."""
import os
from types import SimpleNamespace

import pytest
from mmengine.dataset import Compose

from helpers import TINY_CLIP, tiny_ssn_cfg
from ssn_plugin.datasets import LoadCIRImages, PackCIRInputs
from ssn_plugin.registry import HOOKS, MODELS


def test_freeze_vision_tower_at_epoch():
    model = MODELS.build(tiny_ssn_cfg(TINY_CLIP))
    hook = HOOKS.build(dict(type='FreezeVisionTowerHook', epoch=1))
    runner = SimpleNamespace(model=model, epoch=0)
    hook.before_train_epoch(runner)
    assert all(p.requires_grad for p in model.clip.vision_parameters())
    runner.epoch = 1
    hook.before_train_epoch(runner)
    vision = {id(p) for p in model.clip.vision_parameters()}
    assert vision and all(not p.requires_grad for p in model.clip.vision_parameters())
    others = [p for p in model.parameters() if id(p) not in vision]
    frozen_others = [n for n, p in model.named_parameters()
                     if id(p) not in vision and not p.requires_grad]
    # Only CLIP's unused temperature stays frozen besides the vision tower.
    assert frozen_others == ['clip.model.logit_scale']
    assert all(p.requires_grad for p in model.clip.text_parameters())
    assert len(others) > len(model.clip.text_parameters())


def test_feature_cache_refuses_a_random_training_pipeline():
    cfg = tiny_ssn_cfg(TINY_CLIP)
    cfg['backbone']['feature_cache'] = True
    model = MODELS.build(cfg)
    hook = HOOKS.build(dict(type='FreezeVisionTowerHook', epoch=1))

    class RandomFlip:  # any transform outside the deterministic list
        def __call__(self, results):
            return results

    def runner_with(transforms):
        dataset = SimpleNamespace(pipeline=Compose(transforms))
        return SimpleNamespace(model=model, train_dataloader=SimpleNamespace(dataset=dataset))

    deterministic = [LoadCIRImages(), PackCIRInputs()]
    hook.before_train(runner_with(deterministic))  # accepted
    with pytest.raises(ValueError, match=r"training pipeline has \['RandomFlip'\]"):
        hook.before_train(runner_with(deterministic[:1] + [RandomFlip()] + deterministic[1:]))
    # Without the feature cache any pipeline is fine.
    plain = MODELS.build(tiny_ssn_cfg(TINY_CLIP))
    runner = runner_with([RandomFlip()])
    runner.model = plain
    hook.before_train(runner)


def test_freeze_defaults_to_the_second_epoch_and_says_what_it_caches():
    from unittest import mock
    assert HOOKS.build(dict(type='FreezeVisionTowerHook')).epoch == 1  # the docstring's default
    cfg = tiny_ssn_cfg(TINY_CLIP)
    messages = []
    for cache in (True, False):
        cfg['backbone']['feature_cache'] = cache
        model = MODELS.build(cfg)
        hook = HOOKS.build(dict(type='FreezeVisionTowerHook', epoch=0))
        messages.clear()
        with mock.patch('ssn_plugin.engine.hooks.freeze_vision_tower_hook.print_log',
                        lambda msg, **kw: messages.append(msg)):
            hook.before_train_epoch(SimpleNamespace(model=model, epoch=0))
        assert ('cached per image' in ' '.join(messages)) is cache, messages
    # With the feature cache, a dataset without a pipeline has nothing random to refuse.
    cfg['backbone']['feature_cache'] = True
    hook.before_train(SimpleNamespace(model=MODELS.build(cfg), train_dataloader=SimpleNamespace(
        dataset=SimpleNamespace())))


def test_after_each_epoch_the_hook_reports_what_the_feature_cache_saved():
    """The line a user reads to know the cache works: its size, the encodings it reused and
    those it computed, for the epoch that just ended; nothing when there is no cache or it is
    still empty."""
    from unittest import mock

    class Cache(dict):
        hits, misses = 7, 3

    hook = HOOKS.build(dict(type='FreezeVisionTowerHook'))
    messages = []

    def after_epoch(cache, epoch=4):
        clip = SimpleNamespace() if cache == 'absent' else SimpleNamespace(feature_cache=cache)
        model = SimpleNamespace(clip=clip)
        messages.clear()
        with mock.patch('ssn_plugin.engine.hooks.freeze_vision_tower_hook.print_log',
                        lambda msg, **kw: messages.append((msg, kw.get('logger')))):
            hook.after_train_epoch(SimpleNamespace(model=model, epoch=epoch))
        return messages

    assert after_epoch(Cache(a=1, b=2)) == [(
        'Epoch 4: feature cache holds 2 images; 7 image encodings reused, 3 computed so far',
        'current')]
    assert after_epoch(Cache()) == []  # empty: nothing cached yet
    assert after_epoch(None) == []  # no cache configured
    assert after_epoch('absent') == []  # a backbone without the attribute


def test_epoch_seed_hook_seeds_from_the_run_seed_and_the_epoch():
    """Each epoch's random streams (Python, numpy, torch) are a function of (run seed, epoch):
    the same pair gives the same draws, another epoch or another run seed other draws."""
    import random

    import numpy as np
    import torch
    hook = HOOKS.build(dict(type='EpochSeedHook'))

    def draws(seed, epoch):
        hook.before_train_epoch(SimpleNamespace(seed=seed, epoch=epoch))
        return (random.random(), float(np.random.rand()), float(torch.rand(1)))

    assert draws(7, 3) == draws(7, 3)
    assert all(a != b for a, b in zip(draws(7, 3), draws(7, 4)))
    assert all(a != b for a, b in zip(draws(7, 3), draws(8, 3)))
    assert all(a != b for a, b in zip(draws(7, 0), draws(8, 0)))
    assert len(set(draws(None, 2))) == 3  # a runner without a seed still gets reseeded


@pytest.mark.parametrize('seed, epoch, rank', [(7, 3, 0), (7, 3, 2), (0, 1, 1),
                                               (2**32 + 5, 0, 0), (None, 2, 1)])
def test_epoch_seed_hook_uses_the_documented_seed(monkeypatch, seed, epoch, rank):
    """The seed of an epoch is run seed + 1000 * epoch + 1_000_003 * rank (numpy's taken mod
    2**32, its range): a run resumed with a later version repeats the same epoch, and no two
    ranks share a stream."""
    import random

    import numpy as np
    import torch
    from ssn_plugin.engine.hooks import epoch_seed_hook
    monkeypatch.setattr(epoch_seed_hook, 'get_rank', lambda: rank)
    HOOKS.build(dict(type='EpochSeedHook')).before_train_epoch(
        SimpleNamespace(seed=seed, epoch=epoch))
    expected = (seed or 0) + 1000 * epoch + 1_000_003 * rank
    assert random.random() == random.Random(expected).random()
    assert np.random.rand() == np.random.RandomState(expected % 2**32).rand()
    assert torch.equal(torch.rand(3), torch.rand(3, generator=torch.Generator().manual_seed(
        expected)))


def test_a_folder_that_cannot_be_synced_still_gets_the_file(tmp_path, monkeypatch):
    """Some file systems refuse to open or fsync a directory: the rename has happened, the
    file is in place, and the write is not an error."""
    from ssn_plugin.engine.hooks import safe_checkpoint_hook
    tmp, path = tmp_path / 'x.tmp', tmp_path / 'x.pth'
    tmp.write_bytes(b'new')
    path.write_bytes(b'old')
    real_open = os.open

    def no_directories(name, flags, *args):
        if os.path.isdir(name):
            raise PermissionError(13, 'directories cannot be opened here', name)
        return real_open(name, flags, *args)

    monkeypatch.setattr(safe_checkpoint_hook.os, 'open', no_directories)
    safe_checkpoint_hook.replace_atomically(str(tmp), str(path))
    assert path.read_bytes() == b'new' and not tmp.exists()
