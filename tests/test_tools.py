"""The command-line tools: merge_args, and train -> test -> resume end to end on CPU."""
import argparse
import glob
import json
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.config import Config

from conftest import GALLERY_PIPELINE, PROJECT_ROOT, QUERY_PIPELINE, TRAIN_PIPELINE

sys.path.insert(0, osp.join(PROJECT_ROOT, 'tools'))
import test as test_tool  # noqa: E402
import train as train_tool  # noqa: E402


def write_tiny_config(tmp_path, data_root, clip_file, max_epochs=1) -> str:
    """A config inheriting the real CIRR recipe, shrunk to the tiny model and data."""
    text = f"""
_base_ = [{osp.join(PROJECT_ROOT, 'configs', 'cirr', 'ssn.py')!r}]
model = dict(backbone=dict(arch={clip_file!r}, pretrained=None),
             fusion=dict(num_heads=2, ffn_dim=64))
optim_wrapper = dict(type='OptimWrapper')
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root={data_root!r}, pipeline={TRAIN_PIPELINE!r}))
val_dataloader = dict(batch_size=5, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root={data_root!r}, pipeline={QUERY_PIPELINE!r},
                                   gallery_pipeline={GALLERY_PIPELINE!r}))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs={max_epochs})
default_hooks = dict(logger=dict(interval=1))
"""
    path = tmp_path / 'tiny_cirr_ssn.py'
    path.write_text(text)
    return str(path)


def test_train_merge_args_is_explicit():
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper', optimizer=dict(lr=1.0)),
                      train_cfg=dict(max_epochs=3), auto_scale_lr=dict(enable=False)))
    args = train_tool.parse_args(
        ['c.py', '--amp', '--resume', '--cfg-options', 'train_cfg.max_epochs=7'])
    merged = train_tool.merge_args(cfg, args)
    assert merged.optim_wrapper.type == 'AmpOptimWrapper'
    assert merged.optim_wrapper.loss_scale == 'dynamic'
    assert merged.train_cfg.max_epochs == 7
    assert merged.resume is True and merged.load_from is None
    assert merged.work_dir == osp.join('./work_dirs', 'c')
    assert merged.launcher == 'none'

    args = train_tool.parse_args(['c.py', '--resume', 'x.pth', '--work-dir', 'w'])
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper')))
    merged = train_tool.merge_args(cfg, args)
    assert merged.load_from == 'x.pth' and merged.resume is True and merged.work_dir == 'w'
    # Without flags nothing changes but the launcher and work dir.
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper'), resume=False))
    merged = train_tool.merge_args(cfg, train_tool.parse_args(['c.py']))
    assert merged.optim_wrapper.type == 'OptimWrapper' and merged.resume is False


def test_test_merge_args_sets_checkpoint():
    cfg = Config(dict(load_from=None, work_dir='keep'))
    args = test_tool.parse_args(['c.py', 'ckpt.pth', '--cfg-options', 'a=1'])
    merged = test_tool.merge_args(cfg, args)
    assert merged.load_from == 'ckpt.pth' and merged.a == 1 and merged.work_dir == 'keep'
    assert isinstance(args, argparse.Namespace)


def run_tool(args, cwd):
    result = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def test_train_test_resume_end_to_end(tmp_path, tiny_cirr, tiny_clip_file):
    config = write_tiny_config(tmp_path, tiny_cirr['root'], tiny_clip_file, max_epochs=1)
    work_dir = str(tmp_path / 'work')
    out = run_tool([osp.join(PROJECT_ROOT, 'tools', 'train.py'), config, '--work-dir',
                    work_dir], cwd=str(tmp_path))
    assert 'loss_con' in out and 'loss_kl' in out
    assert 'cirr/Avg' in out and 'cirr/Rsubset@1' in out
    ckpt = osp.join(work_dir, 'epoch_1.pth')
    assert osp.isfile(ckpt)
    assert glob.glob(osp.join(work_dir, 'best_cirr_Avg_epoch_1.pth'))

    metrics_file = str(tmp_path / 'metrics.json')
    out = run_tool([osp.join(PROJECT_ROOT, 'tools', 'test.py'), config, ckpt, '--work-dir',
                    work_dir, '--out', metrics_file], cwd=str(tmp_path))
    with open(metrics_file) as f:
        metrics = json.load(f)
    assert set(metrics) >= {'cirr/R@1', 'cirr/R@5', 'cirr/R@50', 'cirr/Rsubset@1', 'cirr/Avg'}
    # 12 val queries over 23 candidates: R@50 covers every candidate.
    assert metrics['cirr/R@50'] == 100.0
    assert metrics['cirr/Avg'] == pytest.approx(
        (metrics['cirr/R@5'] + metrics['cirr/Rsubset@1']) / 2)

    # Resume from the latest checkpoint and train one more epoch.
    out = run_tool([osp.join(PROJECT_ROOT, 'tools', 'train.py'), config, '--work-dir',
                    work_dir, '--resume', '--cfg-options', 'train_cfg.max_epochs=2'],
                   cwd=str(tmp_path))
    assert 'Load checkpoint from' in out or 'resumed' in out.lower()
    assert 'Epoch(train) [2]' in out
    assert osp.isfile(osp.join(work_dir, 'epoch_2.pth'))
