"""Checkpoints written by mmengine load on torch >= 2.6, and arbitrary objects stay refused."""
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

from ssn_plugin.engine import install_checkpoint_loader


class Arbitrary:
    pass


def test_mmengine_checkpoint_contents_load(tmp_path):
    install_checkpoint_loader()
    buffer = HistoryBuffer()
    buffer.update(1.5)
    ckpt = dict(meta=dict(epoch=1, seed=np.int64(3), lr=np.float64(0.1)),
                state_dict=dict(w=torch.ones(2)),
                message_hub=dict(log_scalars={'train/loss': buffer},
                                 runtime_info=dict(arr=np.arange(3))))
    path = str(tmp_path / 'ckpt.pth')
    torch.save(ckpt, path)
    if tuple(int(x) for x in torch.__version__.split('.')[:2]) >= (2, 6):
        with pytest.raises(pickle.UnpicklingError):
            torch.load(path)  # the failure mmengine 0.10 hits by itself
    loaded = CheckpointLoader.load_checkpoint(path, map_location='cpu')
    assert torch.equal(loaded['state_dict']['w'], torch.ones(2))
    assert loaded['message_hub']['log_scalars']['train/loss'].current() == 1.5
    assert loaded['meta']['seed'] == 3


def test_arbitrary_objects_are_still_refused(tmp_path):
    install_checkpoint_loader()
    path = str(tmp_path / 'evil.pth')
    torch.save(dict(obj=Arbitrary()), path)
    with pytest.raises(pickle.UnpicklingError):
        CheckpointLoader.load_checkpoint(path, map_location='cpu')


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path):
    """mmengine loads with strict=False and only warns; the test would run a half-random model."""
    import json
    import os.path as osp
    import sys
    from helpers import PROJECT_ROOT, TINY_CLIP, make_tiny_cirr, tiny_ssn_cfg
    from ssn_plugin.registry import MODELS
    from helpers import write_tiny_config
    sys.path.insert(0, osp.join(PROJECT_ROOT, 'tools'))
    import test as test_tool

    clip_file = tmp_path / 'tiny_clip.json'
    clip_file.write_text(json.dumps(TINY_CLIP))
    make_tiny_cirr(str(tmp_path / 'cirr'), num_images=8, num_train=2, num_val=3)
    config = write_tiny_config(tmp_path, str(tmp_path / 'cirr'), str(clip_file))
    other = dict(TINY_CLIP, vision_cfg=dict(TINY_CLIP['vision_cfg'], width=48))
    model = MODELS.build(tiny_ssn_cfg(other))
    ckpt = str(tmp_path / 'other.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    with pytest.raises(ValueError, match=r'does not fit the model .* tensors of another shape '
                                         r'\(first: clip\.model\.visual'):
        test_tool.main([config, ckpt, '--work-dir', str(tmp_path / 'work')])


def test_ddp_prefixes_are_stripped():
    from ssn_plugin.engine.checkpoint import strip_ddp_prefix
    assert strip_ddp_prefix({'module.a.weight': 1, 'b': 2, 'x.module.c': 3}) == {
        'a.weight': 1, 'b': 2, 'x.module.c': 3}


@pytest.mark.parametrize('edit, message', [
    (lambda s: s.pop('bias'), r"1 tensors missing \(first: bias\)"),
    (lambda s: s.update(extra=torch.ones(1)), r"1 tensors the model does not have \(first: extra\)"),
    (lambda s: s.update(weight=torch.ones(3, 3)), r'1 tensors of another shape \(first: weight'),
])
def test_each_kind_of_misfit_is_named(edit, message):
    from ssn_plugin.engine.checkpoint import check_checkpoint_fits
    model = torch.nn.Linear(2, 2)
    state = dict(model.state_dict())
    check_checkpoint_fits(model, dict(state))  # fits: nothing raised
    edit(state)
    with pytest.raises(ValueError, match=message):
        check_checkpoint_fits(model, {f'module.{k}': v for k, v in state.items()})
