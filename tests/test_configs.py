"""Every config of configs/: it builds, a variant equals its base except the keys it means to
change, every leaf runs the shared runtime hooks, every ``save_best`` names a key its
evaluator emits, and the recipes hold the release's settings."""
import glob
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config

from helpers import PROJECT_ROOT
from ssn_plugin.models.clip_backbone import skip_pretrained_weights
from ssn_plugin.registry import DATASETS, HOOKS, METRICS, MODELS

CONFIGS = osp.join(PROJECT_ROOT, 'configs')
LEAVES = sorted(osp.relpath(p, CONFIGS) for p in glob.glob(osp.join(CONFIGS, '*', '*.py'))
                if '_base_' not in p)

#: Below this path anything may differ: the variant replaces the whole sub-dict on purpose.
SUBTREE = object()
_BACKBONE = 'model.backbone.'
_CIRCO_EVAL = {f'{loader}.dataset.{key}': value for loader in ('val_dataloader', 'test_dataloader')
               for key, value in (('type', 'CIRCO'), ('data_root', 'data/CIRCO'),
                                  ('text_template', '{relative_caption}'))}
#: The Combiner's stage: the default runtime's hooks, its stage-1 checkpoint without combiner.
_COMBINER_HOOKS = [dict(type='SafeCheckpointLoaderHook', new_modules=('combiner.', )),
                   dict(type='EpochSeedHook'), dict(type='ImageSizeFromModelHook'),
                   dict(type='GalleryFeatureHook')]
#: variant -> (its base, {flattened key: the variant's value}); nothing else may differ.
VARIANTS = {
    'cirr/ssn_vit_b16.py': ('cirr/ssn.py', {_BACKBONE + 'arch': 'ViT-B-16'}),
    'cirr/ssn_vit_l14.py': ('cirr/ssn.py', {_BACKBONE + 'arch': 'ViT-L-14'}),
    'cirr/ssn_vit_h14.py': ('cirr/ssn.py', {_BACKBONE + 'arch': 'ViT-H-14',
                                            _BACKBONE + 'pretrained': 'laion2b_s32b_b79k',
                                            _BACKBONE + 'grad_checkpointing': True}),
    'cirr/clip_baseline.py': ('cirr/ssn.py', {'model': SUBTREE}),
    'fashioniq/ssn_vit_b16.py': ('fashioniq/ssn.py', {_BACKBONE + 'arch': 'ViT-B-16'}),
    'fashioniq/ssn_vit_l14.py': ('fashioniq/ssn.py', {_BACKBONE + 'arch': 'ViT-L-14',
                                                      _BACKBONE + 'feature_cache': 'cpu'}),
    'fashioniq/ssn_vit_h14.py': ('fashioniq/ssn.py', {
        _BACKBONE + 'arch': 'ViT-H-14', _BACKBONE + 'pretrained': 'laion2b_s32b_b79k',
        _BACKBONE + 'grad_checkpointing': True, _BACKBONE + 'feature_cache': 'cpu'}),
    'fashioniq/clip_baseline.py': ('fashioniq/ssn.py', {'model': SUBTREE}),
    'circo/ssn_cirr_trained.py': ('cirr/ssn.py', dict(
        _CIRCO_EVAL, **{'val_evaluator.type': 'CIRCOMetric', 'test_evaluator.type': 'CIRCOMetric',
                        'default_hooks.checkpoint.save_best': 'circo/mAP@10'})),
    'custom/ssn_triplets.py': ('cirr/ssn.py', dict(
        {f'{loader}.{key}': value for loader in ('train_dataloader', 'val_dataloader',
                                                 'test_dataloader')
         for key, value in (('batch_size', 64), ('dataset.type', 'CustomCIRDataset'),
                            ('dataset.data_root', 'data/my_triplets'))},
        data_root='data/my_triplets', dataset_type='CustomCIRDataset', max_epochs=20,
        param_scheduler=SUBTREE, **{
            'val_evaluator.type': 'TripletRecallMetric',
            'test_evaluator.type': 'TripletRecallMetric',
            'default_hooks.checkpoint.save_best': 'triplets/mean_R',
            'default_hooks.checkpoint.max_keep_ckpts': 2,
            'optim_wrapper.optimizer.lr': 2.5e-5, 'train_cfg.max_epochs': 20,
            'auto_scale_lr.base_batch_size': 64})),
    'cirr/clip4cir_stage1.py': ('cirr/clip_baseline.py', {'model.combine': 'raw',
                                                          'model.loss': SUBTREE}),
    'cirr/clip4cir_combiner.py': ('cirr/clip_baseline.py', {'model': SUBTREE,
                                                            'custom_hooks': _COMBINER_HOOKS}),
    'fashioniq/clip4cir_stage1.py': ('fashioniq/clip_baseline.py', {'model.combine': 'raw',
                                                                    'model.loss': SUBTREE}),
    'fashioniq/clip4cir_combiner.py': ('fashioniq/clip_baseline.py', {
        'model': SUBTREE, 'custom_hooks': _COMBINER_HOOKS}),
    'demo/clip4cir_stage1_shapes.py': ('demo/ssn_shapes.py', {'model': SUBTREE}),
    'demo/clip4cir_combiner_shapes.py': ('demo/ssn_shapes.py', {'model': SUBTREE,
                                                                'custom_hooks': _COMBINER_HOOKS}),
    'demo/ssn_shapes_hard.py': ('demo/ssn_shapes.py', dict(
        {f'{loader}.dataset.{key}': value for loader in ('train_dataloader', 'val_dataloader',
                                                         'test_dataloader')
         for key, value in (('data_root', 'data/shapes_hard'),
                            ('generator.difficulty', 'hard'))},
        data_root='data/shapes_hard', **{'generator.difficulty': 'hard'})),
    'demo/ssn_shapes_triplets.py': ('custom/ssn_triplets.py', dict(
        {f'{loader}.{key}': value for loader in ('train_dataloader', 'val_dataloader',
                                                 'test_dataloader')
         for key, value in (('num_workers', 0), ('persistent_workers', False),
                            ('pin_memory', False),
                            ('dataset.data_root', 'data/my_triplets_demo'))},
        model=SUBTREE, param_scheduler=SUBTREE, data_root='data/my_triplets_demo',
        max_epochs=4, **{
            'train_dataloader.batch_size': 32, 'val_dataloader.batch_size': 128,
            'test_dataloader.batch_size': 128, 'optim_wrapper.type': 'OptimWrapper',
            'optim_wrapper.optimizer.lr': 1e-4, 'train_cfg.max_epochs': 4,
            'auto_scale_lr.base_batch_size': 32, 'default_hooks.logger.interval': 10})),
}


def load(name: str) -> Config:
    return Config.fromfile(osp.join(CONFIGS, name))


def flatten(value, prefix: str = '') -> dict:
    """{'a.b.c': leaf} of nested dicts; lists and everything else are leaves."""
    if not isinstance(value, dict):
        return {prefix[:-1]: value}
    flat = {}
    for key, item in value.items():
        flat.update(flatten(item, f'{prefix}{key}.'))
    return flat


def plain(cfg: Config) -> dict:
    content = cfg.to_dict()
    content.pop('filename', None)
    return content


def under(key: str, prefixes) -> bool:
    return any(key == p or key.startswith(p + '.') for p in prefixes)


def build_meta_model(model_cfg: dict):
    model_cfg = Config(dict(model=model_cfg)).model  # a copy: the caller's stays as it was
    skip_pretrained_weights(model_cfg)
    with torch.device('meta'):
        return MODELS.build(model_cfg)


@pytest.mark.parametrize('name', LEAVES)
def test_every_config_builds(name):
    """The model (meta tensors, no weights), hooks and evaluators build, the datasets are
    registered."""
    cfg = load(name)
    assert cfg.default_scope == 'ssn_plugin'
    if not isinstance(cfg.model.backbone.arch, dict):  # a named open_clip architecture
        model = build_meta_model(cfg.model)
        assert model.clip.num_image_tokens > 0
    for hook in cfg.custom_hooks:
        assert type(HOOKS.build(dict(hook))).__name__ == hook['type']
    for split in ('val', 'test'):
        assert type(METRICS.build(dict(cfg[f'{split}_evaluator']))).__name__ == \
            cfg[f'{split}_evaluator']['type']
        assert DATASETS.get(cfg[f'{split}_dataloader'].dataset.type) is not None


def test_the_demo_model_builds():
    model = MODELS.build(load('demo/ssn_shapes.py').model)
    assert model.image_size == (64, 64) and model.clip.num_image_tokens == 65


def test_the_own_triplets_demo_fine_tunes_the_demo_model():
    """Its model is the quick start's, so the quick start's checkpoint loads into it."""
    assert load('demo/ssn_shapes_triplets.py').model == load('demo/ssn_shapes.py').model


@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_variant_equals_its_base_except_the_intended_keys(variant):
    base_name, intended = VARIANTS[variant]
    base, cfg = flatten(plain(load(base_name))), flatten(plain(load(variant)))
    replaced = [k for k, v in intended.items() if v is SUBTREE]
    changed = {k for k in set(base) | set(cfg) if base.get(k, SUBTREE) != cfg.get(k, SUBTREE)}
    assert {k for k in changed if not under(k, replaced)} == set(intended) - set(replaced)
    for key, value in intended.items():
        if value is not SUBTREE:
            assert cfg[key] == value, key
    assert all(changed & {k for k in cfg if under(k, [r])} for r in replaced)


def test_every_variant_is_listed():
    """A new config that is neither a base leaf nor listed here gets a pin before it lands."""
    bases = {base for base, _ in VARIANTS.values()}
    assert set(LEAVES) == set(VARIANTS) | bases | {'circo/clip_baseline.py',
                                                   'demo/ssn_shapes.py'}


@pytest.mark.parametrize('name', LEAVES)
def test_every_leaf_runs_the_default_runtime_hooks(name):
    runtime = Config.fromfile(osp.join(CONFIGS, '_base_', 'default_runtime.py'))
    hooks = [h['type'] for h in load(name).custom_hooks]
    shared = [h['type'] for h in runtime.custom_hooks]
    assert hooks[:len(shared)] == shared  # all of them, in their order, first
    assert set(runtime.default_hooks) <= set(load(name).default_hooks)


def synthetic_samples(metric_type: str, count: int):
    """What the model's predict leaves on ``count`` query samples, per metric type; query i
    has reference i and target i + 1 of a gallery of ``count + 6`` images."""
    extra = {
        'CIRRMetric': lambda i: dict(pairid=i, subset_index=list(range(i, i + 6))),
        'FashionIQMetric': lambda i: dict(category=('dress', 'shirt', 'toptee')[i % 3],
                                          gallery_range=(0, count + 6)),
        'CIRCOMetric': lambda i: dict(query_id=i, gt_index=[i + 1], semantic_aspects=['focus']),
        'TripletRecallMetric': lambda i: dict(group=('a', 'b')[i % 2]),
    }[metric_type]
    return [dict(ref_index=i, target_index=i + 1, **extra(i)) for i in range(count)]


def emitted_keys(evaluator: dict) -> set:
    """The keys the evaluator's metric returns on a small synthetic evaluation."""
    metric = METRICS.build(dict(evaluator))
    gallery = F.normalize(torch.randn(66, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    metric.set_gallery(gallery, [str(i) for i in range(66)])
    samples = synthetic_samples(evaluator['type'], 60)
    for sample in samples:
        sample['query_feat'] = gallery[sample['target_index']]
    metric.process(None, samples)
    return set(metric.evaluate(len(samples)))


@pytest.mark.parametrize('name', LEAVES)
def test_save_best_names_a_key_its_evaluator_emits(name):
    cfg = load(name)
    save_best = cfg.default_hooks.checkpoint.get('save_best')
    if save_best is None:
        assert name == 'circo/clip_baseline.py'  # zero-shot only: nothing to keep
        return
    assert save_best in emitted_keys(cfg.val_evaluator)


# arch -> (C_v, C_t = W, D, image tokens, QuickGELU, mean, gradient checkpointing)
EXPECTED = {
    'ssn_vit_b16.py': (768, 512, 512, 197, True, 0.48145466, False),
    'ssn_vit_l14.py': (1024, 768, 768, 257, True, 0.48145466, False),
    'ssn_vit_h14.py': (1280, 1024, 1024, 257, False, 0.48145466, True),
}


@pytest.mark.parametrize('dataset', ['cirr', 'fashioniq'])
@pytest.mark.parametrize('recipe', sorted(EXPECTED))
def test_recipe_builds_the_promised_model(dataset, recipe):
    cfg = load(osp.join(dataset, recipe))
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


@pytest.mark.parametrize('dataset', ['cirr', 'fashioniq', 'circo'])
def test_every_dataset_has_a_zero_shot_baseline(dataset):
    cfg = load(osp.join(dataset, 'clip_baseline.py'))
    skip_pretrained_weights(cfg.model)
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'CLIPBaseline' and model.mode == 'sum'
    assert model.clip.weights.quick_gelu  # the 'openai' tag
    expected = {'cirr': 'CIRRMetric', 'fashioniq': 'FashionIQMetric', 'circo': 'CIRCOMetric'}
    assert cfg.test_evaluator.type == expected[dataset]


def test_circo_config_evaluates_the_cirr_recipe():
    cfg = load('circo/ssn_cirr_trained.py')
    assert cfg.model == load('cirr/ssn.py').model  # a CIRR checkpoint loads as it is
    circo = Config.fromfile(osp.join(CONFIGS, '_base_', 'datasets', 'circo.py'))
    for loader, evaluator in ((cfg.val_dataloader, cfg.val_evaluator),
                              (cfg.test_dataloader, cfg.test_evaluator)):
        assert loader.dataset.type == 'CIRCO' and loader.dataset.split == 'val'
        assert set(loader.dataset) == {'type', 'data_root', 'split', 'text_template', 'pipeline',
                                       'gallery_pipeline'}
        # The pipelines inherited from CIRR's val set are CIRCO's own.
        assert loader.dataset.pipeline == circo.query_pipeline
        assert loader.dataset.gallery_pipeline == circo.gallery_pipeline
        assert evaluator == dict(type='CIRCOMetric')
    assert cfg.train_dataloader.dataset.type == 'CIRR'
    assert cfg.default_hooks.checkpoint.save_best == 'circo/mAP@10'


def test_release_recipe_config():
    cfg = load('cirr/ssn.py')
    assert cfg.model.backbone.arch == 'ViT-B-32' and cfg.model.backbone.pretrained == 'openai'
    assert cfg.train_dataloader.batch_size == 128 and cfg.train_dataloader.drop_last
    assert cfg.train_cfg.max_epochs == 50 and cfg.train_cfg.val_interval == 1
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.optimizer.type == 'Adam' and cfg.optim_wrapper.optimizer.lr == 5e-5
    assert {k: v['lr_mult'] for k, v in cfg.optim_wrapper.paramwise_cfg.custom_keys.items()} == {
        'clip': 0.2, 'token_proj': 0.4, 'token_type': 0.8, 'token_selection': 0.8,
        'fusion': 0.8}
    assert cfg.param_scheduler == dict(type='StepLR', by_epoch=True, step_size=10, gamma=0.1)
    assert cfg.default_hooks.checkpoint.save_best == 'cirr/Avg'
    assert dict(type='GalleryFeatureHook') in cfg.custom_hooks
    assert cfg.custom_hooks[0] == dict(type='SafeCheckpointLoaderHook')
    assert cfg.val_dataloader.dataset.split == 'val'


def test_fashioniq_recipe_config(tiny_clip_file):
    from mmengine.optim import build_optim_wrapper
    cfg = load('fashioniq/ssn.py')
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert cfg.default_hooks.checkpoint.save_best == 'fiq/overall'
    assert dict(type='FreezeVisionTowerHook', epoch=1) in cfg.custom_hooks
    assert cfg.val_dataloader.dataset.gallery_protocol == 'original'
    model = MODELS.build(dict(cfg.model, backbone=dict(cfg.model.backbone, arch=tiny_clip_file,
                                                       pretrained=None)))
    wrapper = build_optim_wrapper(model, dict(cfg.optim_wrapper, type='OptimWrapper'))
    clip_ids = {id(p) for p in model.clip.parameters()}
    for group in wrapper.optimizer.param_groups:
        in_clip = {id(p) in clip_ids for p in group['params']}
        assert len(in_clip) == 1
        if in_clip == {True}:
            assert group['eps'] == 1e-4 and group['lr'] == pytest.approx(0.2 * 4e-5)
        else:
            assert group['eps'] == 1e-8
        assert group['weight_decay'] == 0.01
