"""The larger-backbone recipes build what their comments promise (on the meta device: shapes
without memory or downloads)."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from conftest import PROJECT_ROOT
from ssn_plugin.models.clip_backbone import skip_pretrained_weights
from ssn_plugin.registry import MODELS

# arch -> (C_v, C_t = W, D, image tokens, QuickGELU, mean, gradient checkpointing)
EXPECTED = {
    'ssn_vit_b16.py': (768, 512, 512, 197, True, 0.48145466, False),
    'ssn_vit_l14.py': (1024, 768, 768, 257, True, 0.48145466, False),
    'ssn_vit_h14.py': (1280, 1024, 1024, 257, False, 0.48145466, True),
}


@pytest.mark.parametrize('dataset', ['cirr', 'fashioniq'])
@pytest.mark.parametrize('recipe', sorted(EXPECTED))
def test_recipe_builds_the_promised_model(dataset, recipe):
    cfg = Config.fromfile(osp.join(PROJECT_ROOT, 'configs', dataset, recipe))
    assert skip_pretrained_weights(cfg.model) == 1
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    v_width, t_width, embed, tokens, quick_gelu, mean, checkpointing = EXPECTED[recipe]
    clip = model.clip
    assert (clip.vision_width, clip.text_width, clip.embed_dim) == (v_width, t_width, embed)
    assert clip.num_image_tokens == tokens and model.image_size == (224, 224)
    assert model.width == t_width  # W = C_t, as the release
    assert model.image_token_proj.in_features == v_width
    assert model.output_layer.out_features == embed
    assert clip.weights.quick_gelu is quick_gelu
    assert clip.weights.source == 'tag'
    assert clip.preprocess_cfg['mean'][0] == pytest.approx(mean)
    assert clip.grad_checkpointing is checkpointing
    assert clip.model.visual.transformer.grad_checkpointing is checkpointing
    # The recipe keeps the dataset's training set-up (AMP, the learning-rate split).
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys['clip']['lr_mult'] == 0.2


def test_grad_checkpointing_changes_memory_not_results(tiny_clip_file):
    """Same loss and gradients with and without recomputation."""
    from conftest import tiny_ssn_cfg
    torch.manual_seed(0)
    plain = MODELS.build(tiny_ssn_cfg(tiny_clip_file))
    cfg = tiny_ssn_cfg(tiny_clip_file)
    cfg['backbone']['grad_checkpointing'] = True
    checkpointed = MODELS.build(cfg)
    checkpointed.load_state_dict(plain.state_dict())
    plain.eval(), checkpointed.eval()  # no dropout: identical forward passes
    images = torch.randn(3, 3, 32, 32)
    texts = ['make it red', 'remove the dog', 'add a cat']
    grads = []
    for model in (plain, checkpointed):
        model.zero_grad()
        query = model.query_features(images, texts)
        (query * model.gallery_features(images.flip(0))).sum().backward()
        grads.append(model.clip.model.visual.conv1.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
    assert grads[0].abs().sum() > 0


@pytest.mark.parametrize('dataset', ['cirr', 'fashioniq', 'circo'])
def test_every_dataset_has_a_zero_shot_baseline(dataset):
    cfg = Config.fromfile(osp.join(PROJECT_ROOT, 'configs', dataset, 'clip_baseline.py'))
    skip_pretrained_weights(cfg.model)
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'CLIPBaseline' and model.mode == 'sum'
    assert model.clip.weights.quick_gelu  # the 'openai' tag
    expected = {'cirr': 'CIRRMetric', 'fashioniq': 'FashionIQMetric', 'circo': 'CIRCOMetric'}
    assert cfg.test_evaluator.type == expected[dataset]


def test_circo_config_evaluates_the_cirr_recipe():
    cfg = Config.fromfile(osp.join(PROJECT_ROOT, 'configs', 'circo', 'ssn_cirr_trained.py'))
    cirr = Config.fromfile(osp.join(PROJECT_ROOT, 'configs', 'cirr', 'ssn.py'))
    assert cfg.model == cirr.model  # a CIRR checkpoint loads as it is
    for loader, evaluator in ((cfg.val_dataloader, cfg.val_evaluator),
                              (cfg.test_dataloader, cfg.test_evaluator)):
        assert loader.dataset.type == 'CIRCO' and loader.dataset.split == 'val'
        assert set(loader.dataset) == {'type', 'data_root', 'split', 'text_template', 'pipeline',
                                       'gallery_pipeline'}
        assert evaluator == dict(type='CIRCOMetric')
    assert cfg.train_dataloader.dataset.type == 'CIRR'
    assert cfg.default_hooks.checkpoint.save_best == 'circo/mAP@10'
