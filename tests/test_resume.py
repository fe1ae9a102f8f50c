"""Resume equals never stopped: a run killed with SIGKILL inside an epoch and resumed with
``--resume`` ends with bit-identical weights and validation metrics (CPU)."""
import json
import os.path as osp
import re
import signal
import subprocess
import sys

import pytest
import torch

from conftest import PROJECT_ROOT, TINY_CLIP, make_tiny_cirr
from test_tools import write_tiny_config

KILLER = '''
import os
import signal

from mmengine.hooks import Hook

from ssn_plugin.registry import HOOKS


@HOOKS.register_module()
class KillAtIterHook(Hook):
    """SIGKILL the process after iteration ``iteration`` of epoch ``epoch`` (0-based)."""

    def __init__(self, epoch, iteration):
        self.epoch, self.iteration = epoch, iteration

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.epoch == self.epoch and batch_idx == self.iteration:
            os.kill(os.getpid(), signal.SIGKILL)
'''


def train(config, work_dir, *extra, expect_rc=0):
    result = subprocess.run(
        [sys.executable, osp.join(PROJECT_ROOT, 'tools', 'train.py'), config, '--work-dir',
         work_dir, *extra], capture_output=True, text=True, cwd=osp.dirname(config),
        env={**__import__('os').environ, 'PYTHONPATH': osp.dirname(config)})
    assert result.returncode == expect_rc, (result.stdout + result.stderr)[-3000:]
    return result.stdout + result.stderr


def last_validation(log: str) -> str:
    """The metrics of the last 'Epoch(val) [2]' line, without timings."""
    line = [line for line in log.splitlines() if 'Epoch(val) [2]' in line][-1]
    return re.sub(r'\s+(data_time|time): [\d.]+', '', line.split('Epoch(val) [2]')[1])


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    (tmp_path / 'tiny_clip.json').write_text(json.dumps(TINY_CLIP))
    data_root = str(tmp_path / 'cirr_dataset')
    make_tiny_cirr(data_root)  # 24 triplets, batch 4: 6 iterations per epoch
    config = write_tiny_config(tmp_path, data_root, str(tmp_path / 'tiny_clip.json'),
                               max_epochs=2)
    (tmp_path / 'killer_hook.py').write_text(KILLER)
    killed_config = tmp_path / 'killed.py'
    killed_config.write_text(f"""
_base_ = [{config!r}]
custom_imports = dict(imports=['killer_hook'], allow_failed_imports=False)
custom_hooks = [
    dict(type='SafeCheckpointLoaderHook'), dict(type='EpochSeedHook'),
    dict(type='ImageSizeFromModelHook'), dict(type='GalleryFeatureHook'),
    dict(type='KillAtIterHook', epoch=1, iteration=2),
]
""")
    straight = train(config, str(tmp_path / 'straight'))
    train(str(killed_config), str(tmp_path / 'resumed'), expect_rc=-signal.SIGKILL)
    assert not osp.exists(tmp_path / 'resumed' / 'epoch_2.pth')  # it died inside epoch 2
    resumed = train(config, str(tmp_path / 'resumed'), '--resume')
    assert 'resumed' in resumed.lower() or 'Load checkpoint' in resumed

    def weights(run):
        return torch.load(str(tmp_path / run / 'epoch_2.pth'), map_location='cpu',
                          weights_only=False)['state_dict']

    a, b = weights('straight'), weights('resumed')
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert last_validation(resumed) == last_validation(straight)
