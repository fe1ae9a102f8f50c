"""CLIP4Cir's two stages through tools/train.py, in their demo form: stage 1 trains the tiny
CLIP with the raw sum, stage 2 the Combiner on that CLIP, frozen; a stage-1 checkpoint is not
a stage-2 model for tools/test.py."""
import os.path as osp
import subprocess
import sys

import pytest
import torch

from helpers import PROJECT_ROOT, run_tool, tool

CONFIGS = osp.join(PROJECT_ROOT, 'configs', 'demo')


def small(data_root):
    return [f'data_root={data_root}',
            *(f'{loader}.dataset.generator.{key}={value}'
              for loader in ('train_dataloader', 'val_dataloader')
              for key, value in (('num_train_sets', 8), ('num_val_sets', 4))),
            'train_dataloader.batch_size=4',
            *(f'{loader}.{key}' for loader in ('train_dataloader', 'val_dataloader',
                                               'test_dataloader')
              for key in ('num_workers=0', 'persistent_workers=False')),
            'train_cfg.max_epochs=1', 'train_cfg.val_interval=1']


@pytest.fixture(scope='module')
def stages(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('clip4cir')
    data_root = str(tmp / 'shapes')
    one, two = tmp / 'stage1', tmp / 'stage2'
    out1 = run_tool([tool('train.py'), osp.join(CONFIGS, 'clip4cir_stage1_shapes.py'),
                     '--work-dir', str(one), '--cfg-options', *small(data_root)], str(tmp))
    ckpt1 = str(one / 'epoch_1.pth')
    out2 = run_tool([tool('train.py'), osp.join(CONFIGS, 'clip4cir_combiner_shapes.py'),
                     '--work-dir', str(two), '--cfg-options', *small(data_root),
                     f'load_from={ckpt1}'], str(tmp))
    return dict(tmp=tmp, data_root=data_root, out1=out1, out2=out2, ckpt1=ckpt1,
                ckpt2=str(two / 'epoch_1.pth'))


@pytest.mark.slow
def test_stage1_trains_clip_with_the_cross_entropy(stages):
    assert 'loss_ce:' in stages['out1'] and 'cirr/R@1:' in stages['out1']
    state = torch.load(stages['ckpt1'], weights_only=False)['state_dict']
    assert not any(k.startswith('combiner.') for k in state)


@pytest.mark.slow
def test_stage2_trains_the_combiner_on_the_frozen_stage1_clip(stages):
    assert f'Load checkpoint from {stages["ckpt1"]}' in stages['out2']
    assert 'loss_ce:' in stages['out2'] and 'cirr/R@1:' in stages['out2']
    first = torch.load(stages['ckpt1'], weights_only=False)['state_dict']
    second = torch.load(stages['ckpt2'], weights_only=False)['state_dict']
    clip = [k for k in first if k.startswith('clip.')]
    assert clip and all(torch.equal(first[k], second[k]) for k in clip)  # frozen, loaded
    assert any(k.startswith('combiner.') for k in second)


@pytest.mark.slow
def test_a_stage1_checkpoint_is_not_a_combiner_for_test(stages):
    result = subprocess.run(
        [sys.executable, tool('test.py'), osp.join(CONFIGS, 'clip4cir_combiner_shapes.py'),
         stages['ckpt1'], '--cfg-options', *small(stages['data_root'])],
        cwd=str(stages['tmp']), capture_output=True, text=True)
    assert result.returncode != 0
    assert 'tensors missing (first: combiner.' in result.stdout + result.stderr
