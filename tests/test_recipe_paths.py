"""The release recipe's paths that CPU tests with tiny models used to skip.

* a model at another input resolution (336 px) trains and evaluates with the recipe's
  pipelines unchanged: the image size comes from the model;
* a checkpoint trained from an open_clip *tag* is evaluated and queried with open_clip's
  downloads failing (an offline GPU node), and the rebuilt model still has the tag's activation.

The tools run in-process (their ``main``), so open_clip's tag table and downloads can be patched.
"""
import glob
import json
import os.path as osp
import sys

import open_clip
import open_clip.pretrained as oc_pretrained
import pytest
import torch
from open_clip.transformer import QuickGELU

from helpers import PROJECT_ROOT, TINY_CLIP, make_tiny_cirr, write_image

sys.path.insert(0, osp.join(PROJECT_ROOT, 'tools'))
import retrieve as retrieve_tool  # noqa: E402
import test as test_tool  # noqa: E402
import train as train_tool  # noqa: E402

RECIPE = osp.join(PROJECT_ROOT, 'configs', 'cirr', 'ssn.py')


def write_recipe_config(tmp_path, data_root, backbone: dict) -> str:
    """configs/cirr/ssn.py with a tiny backbone and loaders; the pipelines stay the recipe's."""
    text = f"""
_base_ = [{RECIPE!r}]
model = dict(backbone={backbone!r}, fusion=dict(num_heads=2, ffn_dim=64))
optim_wrapper = dict(type='OptimWrapper')
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root={data_root!r}))
val_dataloader = dict(batch_size=5, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root={data_root!r}))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=1)
default_hooks = dict(logger=dict(interval=1))
"""
    path = tmp_path / 'recipe_tiny.py'
    path.write_text(text)
    return str(path)


@pytest.mark.slow
def test_336px_model_trains_and_evaluates_with_recipe_pipelines(tmp_path):
    data_root = str(tmp_path / 'cirr_dataset')
    make_tiny_cirr(data_root, num_images=12, num_train=8, num_val=6)
    arch = dict(TINY_CLIP, vision_cfg=dict(TINY_CLIP['vision_cfg'], image_size=336,
                                            patch_size=48))
    arch_file = tmp_path / 'tiny_336.json'
    arch_file.write_text(json.dumps(arch))
    backbone = dict(type='OpenCLIPBackbone', arch=str(arch_file), pretrained=None)
    config = write_recipe_config(tmp_path, data_root, backbone)
    work_dir = str(tmp_path / 'work')
    train_tool.main([config, '--work-dir', work_dir])
    metrics = test_tool.main([config, osp.join(work_dir, 'epoch_1.pth'), '--work-dir', work_dir])
    assert metrics['cirr/R@50'] == 100.0  # 6 queries over 11 candidates
    log = open(sorted(glob.glob(osp.join(work_dir, '*', '*.log')))[-1]).read()
    assert 'image size (336, 336) taken from the model' in log


TINY_TAG_ARCH = 'TinyTagCLIP'


@pytest.fixture
def tiny_tag(tmp_path, monkeypatch):
    """Register a tiny architecture with a QuickGELU pretrained tag 'fake_openai' in open_clip,
    whose download returns a local file; yields a switch to make downloads fail."""
    cfg_dir = tmp_path / 'oc_configs'
    cfg_dir.mkdir()
    (cfg_dir / f'{TINY_TAG_ARCH}.json').write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(str(cfg_dir))
    monkeypatch.setitem(oc_pretrained._PRETRAINED, TINY_TAG_ARCH, {
        'fake_openai': dict(url='https://weights.invalid/tiny.pt', hf_hub='', quick_gelu=True,
                            mean=(0.48145466, 0.4578275, 0.40821073),
                            std=(0.26862954, 0.26130258, 0.27577711))})
    torch.manual_seed(0)
    weights = tmp_path / 'tiny.pt'
    torch.save(open_clip.CLIP(**TINY_CLIP, quick_gelu=True).state_dict(), weights)
    state = dict(offline=False, downloads=0)

    def download(*args, **kwargs):
        state['downloads'] += 1
        if state['offline']:
            raise ConnectionError('offline node')
        return str(weights)

    monkeypatch.setattr(oc_pretrained, 'download_pretrained_from_url', download)
    monkeypatch.setattr(oc_pretrained, 'download_pretrained_from_hf', download)
    yield state
    from open_clip import factory
    factory._MODEL_CONFIGS.pop(TINY_TAG_ARCH, None)


@pytest.mark.slow
def test_trained_checkpoint_is_evaluated_and_queried_offline(tmp_path, tiny_tag):
    data_root = str(tmp_path / 'cirr_dataset')
    make_tiny_cirr(data_root, num_images=12, num_train=8, num_val=6)
    backbone = dict(type='OpenCLIPBackbone', arch=TINY_TAG_ARCH, pretrained='fake_openai')
    config = write_recipe_config(tmp_path, data_root, backbone)
    work_dir = str(tmp_path / 'work')
    train_tool.main([config, '--work-dir', work_dir])
    assert tiny_tag['downloads'] == 1  # training starts from the tag's weights
    ckpt = osp.join(work_dir, 'epoch_1.pth')

    tiny_tag['offline'] = True
    metrics = test_tool.main([config, ckpt, '--work-dir', work_dir])
    assert 0 <= metrics['cirr/R@1'] <= 100 and metrics['cirr/R@50'] == 100.0

    gallery = tmp_path / 'photos'
    for i in range(5):
        write_image(str(gallery / f'{i}.png'), seed=50 + i)
    results = retrieve_tool.main([config, ckpt, '--gallery', str(gallery), '--image',
                                  str(gallery / '0.png'), '--text', 'make it red',
                                  '--topk', '3', '--device', 'cpu'])
    assert len(results) == 3 and '0.png' not in [name for name, _ in results]
    assert tiny_tag['downloads'] == 1  # nothing was fetched after training

    from ssn_plugin.apis import CIRRetriever
    retriever = CIRRetriever(config, ckpt, device='cpu')
    assert any(isinstance(m, QuickGELU) for m in retriever.model.clip.modules())
    # Without a checkpoint the model needs the tag's weights, which an offline node lacks.
    with pytest.raises(RuntimeError, match='offline node'):
        CIRRetriever(config, device='cpu')
