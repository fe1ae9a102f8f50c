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
