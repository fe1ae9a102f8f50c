"""Resume equals never stopped: a run killed with SIGKILL inside an epoch and resumed with
``--resume`` ends with bit-identical weights and validation metrics (CPU); a rank killed in a
2-process run stops the run, which then resumes."""
import json
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers import (PROJECT_ROOT, TINY_CLIP, dist_env, free_port, make_tiny_cirr,
                     run_with_deadline, write_tiny_config)

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
        env={**os.environ, 'PYTHONPATH': osp.dirname(config)})
    assert result.returncode == expect_rc, (result.stdout + result.stderr)[-3000:]
    return result.stdout + result.stderr


def last_validation(log: str) -> str:
    """The metrics of the last 'Epoch(val) [2]' line, without timings."""
    line = [line for line in log.splitlines() if 'Epoch(val) [2]' in line][-1]
    return re.sub(r'\s+(data_time|time): [\d.]+', '', line.split('Epoch(val) [2]')[1])


def killable_configs(tmp_path, iteration: int, rank=None):
    """The tiny CIRR recipe (2 epochs of 6 iterations) and a copy that SIGKILLs itself after
    ``iteration`` of the second epoch (only in process ``rank`` when given)."""
    (tmp_path / 'tiny_clip.json').write_text(json.dumps(TINY_CLIP))
    data_root = str(tmp_path / 'cirr_dataset')
    make_tiny_cirr(data_root)  # 24 triplets, batch 4: 6 iterations per epoch
    config = write_tiny_config(tmp_path, data_root, str(tmp_path / 'tiny_clip.json'),
                               max_epochs=2)
    killer = KILLER if rank is None else KILLER.replace(
        'if runner.epoch == self.epoch',
        f"if os.environ.get('RANK') == {rank!r} and runner.epoch == self.epoch")
    (tmp_path / 'killer_hook.py').write_text(killer)
    killed_config = tmp_path / 'killed.py'
    killed_config.write_text(f"""
_base_ = [{config!r}]
custom_imports = dict(imports=['killer_hook'], allow_failed_imports=False)
custom_hooks = [
    dict(type='SafeCheckpointLoaderHook'), dict(type='EpochSeedHook'),
    dict(type='ImageSizeFromModelHook'), dict(type='GalleryFeatureHook'),
    dict(type='KillAtIterHook', epoch=1, iteration={iteration}),
]
""")
    return config, killed_config


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    config, killed_config = killable_configs(tmp_path, iteration=2)
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


@pytest.mark.slow
def test_a_killed_rank_stops_the_run_and_resume_continues(tmp_path):
    """One of 2 processes dies: torchrun stops the other and fails; --resume then finishes."""
    config, killed_config = killable_configs(tmp_path, iteration=0, rank='1')
    work_dir = str(tmp_path / 'work')
    gloo = ['--cfg-options', 'env_cfg.dist_cfg.backend=gloo', 'model_wrapper_cfg.device_ids=None']
    env = dict(dist_env(), PYTHONPATH=str(tmp_path))
    start = time.perf_counter()
    killed = run_with_deadline(
        ['bash', osp.join(PROJECT_ROOT, 'tools', 'dist_train.sh'), str(killed_config), '2',
         '--work-dir', work_dir, *gloo], cwd=str(tmp_path), env=env)
    out = killed.stdout + killed.stderr
    # torchrun names the failed process (the killed one, or the one that lost its peer first).
    assert killed.returncode != 0 and 'ChildFailedError' in out, out[-3000:]
    assert time.perf_counter() - start < 240  # the surviving rank does not hang forever
    assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))
    assert not osp.exists(osp.join(work_dir, 'epoch_2.pth'))
    env['PORT'] = str(free_port())  # PORT + 1 may be taken; ask the OS for a free one
    resumed = run_with_deadline(
        ['bash', osp.join(PROJECT_ROOT, 'tools', 'dist_train.sh'), config, '2', '--work-dir',
         work_dir, '--resume', *gloo], cwd=str(tmp_path), env=env)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    assert osp.isfile(osp.join(work_dir, 'epoch_2.pth'))
