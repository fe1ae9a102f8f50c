"""configs/custom/ssn_triplets.py end to end, in its demo-model form
(configs/demo/ssn_shapes_triplets.py): the demo model trained on the shapes set, then
fine-tuned on own triplets with load_from (data_root given on the command line only); a
checkpoint of another architecture is refused."""
import os.path as osp
import re

import pytest
import torch

from helpers import PROJECT_ROOT, run_tool, tool
from ssn_plugin.datasets import generate_shapes_triplets

CONFIGS = osp.join(PROJECT_ROOT, 'configs')
RECIPE = osp.join(CONFIGS, 'demo', 'ssn_shapes_triplets.py')  # custom/ssn_triplets.py, demo model
SMALL = ['train_dataloader.batch_size=4', 'train_cfg.max_epochs=1']


@pytest.mark.slow
def test_demo_model_fine_tuned_on_own_triplets(tmp_path):
    demo_root = str(tmp_path / 'shapes_demo')
    demo_work = tmp_path / 'demo_work'
    run_tool([tool('train.py'), osp.join(CONFIGS, 'demo', 'ssn_shapes.py'), '--work-dir',
              str(demo_work), '--cfg-options', f'data_root={demo_root}',
              'train_dataloader.dataset.generator.num_train_sets=8',
              'train_dataloader.dataset.generator.num_val_sets=4',
              'val_dataloader.dataset.generator.num_train_sets=8',
              'val_dataloader.dataset.generator.num_val_sets=4',
              'train_dataloader.batch_size=4', 'train_dataloader.num_workers=0',
              'train_dataloader.persistent_workers=False', 'val_dataloader.num_workers=0',
              'val_dataloader.persistent_workers=False', 'test_dataloader.num_workers=0',
              'test_dataloader.persistent_workers=False', 'train_cfg.max_epochs=1',
              'train_cfg.val_interval=1'], cwd=str(tmp_path))
    demo_ckpt = str(demo_work / 'epoch_1.pth')
    assert osp.isfile(demo_ckpt)

    own_root = str(tmp_path / 'my_triplets')
    counts = generate_shapes_triplets(own_root, seed=1, num_train_sets=6, num_val_sets=3)
    work = tmp_path / 'fine_tune'
    out = run_tool([tool('train.py'), RECIPE, '--work-dir', str(work), '--cfg-options',
                    f'data_root={own_root}', f'load_from={demo_ckpt}', *SMALL],
                   cwd=str(tmp_path))
    assert f'Load checkpoint from {demo_ckpt}' in out
    # data_root alone moved the datasets: 12 triplets / batch 4 = 3 steps, validated on own val.
    assert 'Epoch(train) [1][3/3]' in out
    assert f'Recall (%) of {counts["val_triplets"]} queries, gallery of ' \
        f'{counts["val_images"]} images, reference removed' in out
    assert re.search(r'triplets/R@1: [\d.]+', out)
    assert re.search(r'triplets/colour/R@1: [\d.]+', out)  # the records' group
    best = [p for p in work.iterdir() if p.name.startswith('best_triplets_mean_R')]
    assert len(best) == 1
    # The fine-tuned weights started from the demo's: three steps move the token embedding by
    # far less than its scale (a fresh initialisation would differ from it by about 1.4 x).
    demo = torch.load(demo_ckpt, weights_only=False)['state_dict']
    tuned = torch.load(str(work / 'epoch_1.pth'), weights_only=False)['state_dict']
    key = next(k for k in demo if k.endswith('token_embedding.weight'))
    moved = (tuned[key] - demo[key]).abs().mean()
    assert moved < 0.1 * demo[key].abs().mean()

    # Another architecture (fusion width 256 instead of 128) is refused, naming the tensors.
    with pytest.raises(AssertionError) as err:
        run_tool([tool('train.py'), RECIPE, '--work-dir', str(tmp_path / 'wide'),
                  '--cfg-options', f'data_root={own_root}', f'load_from={demo_ckpt}',
                  'model.fusion.ffn_dim=256', *SMALL], cwd=str(tmp_path))
    assert 'the checkpoint does not fit the model of this config' in str(err.value)
    assert 'tensors of another shape' in str(err.value)
