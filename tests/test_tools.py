"""The command-line tools: merge_args, and train -> test -> export -> resume on CPU, one
test per behaviour over one trained fixture."""
import argparse
import glob
import json
import os.path as osp
import re
import sys

import pytest
from mmengine.config import Config

from helpers import (GALLERY_PIPELINE, PROJECT_ROOT, QUERY_PIPELINE, TINY_CLIP, TRAIN_PIPELINE,
                     dist_env, make_standin_circo, make_tiny_cirr, make_tiny_fiq, run_tool,
                     run_with_deadline, tool, write_tiny_config)

sys.path.insert(0, osp.join(PROJECT_ROOT, 'tools'))
import test as test_tool  # noqa: E402
import train as train_tool  # noqa: E402


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
    cfg = Config(dict(test_dataloader=dict(dataset=dict(split='val')),
                      test_evaluator=[dict(type='CIRRMetric')]))
    merged = test_tool.merge_args(cfg, test_tool.parse_args(
        ['c.py', 'k.pth', '--split', 'test1', '--export-dir', 'sub', '--show-dir', 'pics']))
    assert merged.test_dataloader.dataset.split == 'test1'
    assert merged.test_evaluator == [dict(type='CIRRMetric', export_dir='sub', show_dir='pics',
                                          show_num=8)]
    assert isinstance(args, argparse.Namespace)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """One epoch of the CIRR recipe shrunk to a tiny model and data, trained once for the
    tests below. 13 queries and 25 gallery images: neither divides by 2 processes."""
    tmp_path = tmp_path_factory.mktemp('trained')
    clip_file = tmp_path / 'tiny_clip.json'
    clip_file.write_text(json.dumps(TINY_CLIP))
    data_root = str(tmp_path / 'cirr_dataset')
    make_tiny_cirr(data_root, num_images=25, num_val=13)
    config = write_tiny_config(tmp_path, data_root, str(clip_file), max_epochs=1)
    work_dir = str(tmp_path / 'work')
    out = run_tool([osp.join(PROJECT_ROOT, 'tools', 'train.py'), config, '--work-dir',
                    work_dir], cwd=str(tmp_path))
    return dict(root=tmp_path, config=config, work_dir=work_dir, train_log=out,
                ckpt=osp.join(work_dir, 'epoch_1.pth'))


@pytest.fixture(scope='module')
def tested(trained):
    """tools/test.py on the trained checkpoint, with --out, --export-dir and --show-dir."""
    root = trained['root']
    metrics_file = str(root / 'metrics.json')
    out = run_tool([osp.join(PROJECT_ROOT, 'tools', 'test.py'), trained['config'],
                    trained['ckpt'], '--work-dir', trained['work_dir'], '--out', metrics_file,
                    '--export-dir', str(root / 'submission'), '--show-dir', str(root / 'show'),
                    '--show-num', '3'], cwd=str(root))
    with open(metrics_file) as f:
        return dict(metrics=json.load(f), log=out)


@pytest.mark.slow
def test_train_logs_losses_validates_and_keeps_the_best(trained):
    out = trained['train_log']
    assert 'loss_con' in out and 'loss_kl' in out
    assert 'cirr/Avg' in out and 'cirr/Rsubset@1' in out
    assert out.count('Encoded the gallery: 25 images') == 1  # once per validation
    assert osp.isfile(trained['ckpt'])
    assert glob.glob(osp.join(trained['work_dir'], 'best_cirr_Avg_epoch_1.pth'))


@pytest.mark.slow
def test_test_tool_metrics(tested):
    metrics = dict(tested['metrics'])
    assert metrics.pop('cirr/exported_queries') == 13
    assert set(metrics) >= {'cirr/R@1', 'cirr/R@5', 'cirr/R@50', 'cirr/Rsubset@1', 'cirr/Avg'}
    # 13 val queries over 24 candidates: R@50 covers every candidate.
    assert metrics['cirr/R@50'] == 100.0
    assert metrics['cirr/Avg'] == pytest.approx(
        (metrics['cirr/R@5'] + metrics['cirr/Rsubset@1']) / 2)


@pytest.mark.slow
def test_test_tool_export(trained, tested):
    with open(trained['root'] / 'submission' / 'recall_submission_ssn.json') as f:
        submission = json.load(f)
    assert len(submission) == 13 + 2  # 13 pairids + version + metric


@pytest.mark.slow
def test_test_tool_pictures(trained, tested):
    pictures = sorted(glob.glob(str(trained['root'] / 'show' / '*.png')))
    assert [osp.basename(p) for p in pictures] == [f'query_{i:06d}.png' for i in range(3)]


@pytest.mark.slow
def test_two_process_test_equals_one(trained, tested):
    """Two CPU processes (gloo) give exactly the single-process numbers."""
    root = trained['root']
    dist_file = str(root / 'metrics_dist.json')
    result = run_with_deadline(
        ['bash', osp.join(PROJECT_ROOT, 'tools', 'dist_test.sh'), trained['config'],
         trained['ckpt'], '2', '--work-dir', str(root / 'dist'), '--out', dist_file,
         '--export-dir', str(root / 'submission_dist'), '--cfg-options',
         'env_cfg.dist_cfg.backend=gloo', 'model_wrapper_cfg.device_ids=None'],
        cwd=str(root), env=dist_env())
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    with open(dist_file) as f:
        assert json.load(f) == tested['metrics']


@pytest.mark.slow
def test_resume_continues_from_the_latest_checkpoint(trained, tested):
    out = run_tool([osp.join(PROJECT_ROOT, 'tools', 'train.py'), trained['config'],
                    '--work-dir', trained['work_dir'], '--resume', '--cfg-options',
                    'train_cfg.max_epochs=2'], cwd=str(trained['root']))
    assert 'Load checkpoint from' in out or 'resumed' in out.lower()
    assert 'Epoch(train) [2]' in out
    assert osp.isfile(osp.join(trained['work_dir'], 'epoch_2.pth'))


def test_cfg_options_have_the_last_word():
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper')))
    args = train_tool.parse_args(['c.py', '--amp', '--resume', 'a.pth', '--cfg-options',
                                  'optim_wrapper.type=OptimWrapper', 'load_from=b.pth'])
    merged = train_tool.merge_args(cfg, args)
    assert merged.optim_wrapper.type == 'OptimWrapper' and merged.load_from == 'b.pth'
    cfg = Config(dict(test_dataloader=dict(dataset=dict(split='val'))))
    args = test_tool.parse_args(['c.py', 'k.pth', '--split', 'test1', '--cfg-options',
                                 'test_dataloader.dataset.split=val', 'load_from=other.pth'])
    merged = test_tool.merge_args(cfg, args)
    assert merged.test_dataloader.dataset.split == 'val' and merged.load_from == 'other.pth'


def test_data_root_option_moves_the_datasets_that_used_it():
    """A Python config copies data_root into its datasets: --cfg-options data_root=DIR moves
    those, not a dataset with a root of its own, and a loader's own option still wins."""
    cfg = Config(dict(data_root='data/a', train_dataloader=dict(dataset=dict(data_root='data/a')),
                      val_dataloader=dict(dataset=dict(data_root='data/a')),
                      test_dataloader=dict(dataset=dict(data_root='data/other'))))
    args = train_tool.parse_args(['c.py', '--cfg-options', 'data_root=/new',
                                  'val_dataloader.dataset.data_root=/mine'])
    merged = train_tool.merge_args(cfg, args)
    assert merged.data_root == '/new'
    assert merged.train_dataloader.dataset.data_root == '/new'
    assert merged.val_dataloader.dataset.data_root == '/mine'
    assert merged.test_dataloader.dataset.data_root == 'data/other'


@pytest.mark.parametrize('recipe', ['cirr/ssn.py', 'fashioniq/ssn.py', 'demo/ssn_shapes.py'])
def test_auto_scale_lr_on_the_recipes(recipe):
    cfg = Config.fromfile(osp.join(PROJECT_ROOT, 'configs', recipe))
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=128)
    merged = train_tool.merge_args(cfg, train_tool.parse_args([recipe, '--auto-scale-lr']))
    assert merged.auto_scale_lr == dict(enable=True, base_batch_size=128)
    with pytest.raises(ValueError, match=r'auto_scale_lr = dict\(base_batch_size=N\)'):
        train_tool.merge_args(Config(dict(optim_wrapper=dict())),
                              train_tool.parse_args(['c.py', '--auto-scale-lr']))


def test_test_tool_never_loads_pretrained_clip():
    cfg = Config.fromfile(osp.join(PROJECT_ROOT, 'configs', 'cirr', 'ssn.py'))
    merged = test_tool.merge_args(cfg, test_tool.parse_args(['c.py', 'k.pth']))
    assert merged.model.backbone.load_pretrained is False
    assert merged.model.backbone.pretrained == 'openai'  # still decides activation, stats


def test_cpu_distributed_needs_gloo(monkeypatch):
    from ssn_plugin.cli import init_cpu_process_group
    monkeypatch.setattr('torch.cuda.is_available', lambda: False)
    cfg = Config(dict(launcher='pytorch', env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    with pytest.raises(RuntimeError, match='env_cfg.dist_cfg.backend=gloo'):
        init_cpu_process_group(cfg)
    assert init_cpu_process_group(Config(dict(launcher='none'))) is False


@pytest.fixture(scope='module')
def fiq_run(tmp_path_factory):
    """Two epochs of the Fashion-IQ recipe shrunk to the tiny model and data, then
    tools/test.py with --out and --show-dir on the last checkpoint; run once for the tests
    below."""
    tmp_path = tmp_path_factory.mktemp('fiq')
    clip_file = tmp_path / 'tiny_clip.json'
    clip_file.write_text(json.dumps(TINY_CLIP))
    data_root = str(tmp_path / 'fiq')
    make_tiny_fiq(data_root)
    caption = "dict(type='ComposeFIQCaption', random={})"
    text = f"""
_base_ = [{osp.join(PROJECT_ROOT, 'configs', 'fashioniq', 'ssn.py')!r}]
model = dict(backbone=dict(arch={str(clip_file)!r}, pretrained=None),
             fusion=dict(num_heads=2, ffn_dim=64))
optim_wrapper = dict(type='OptimWrapper')
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root={data_root!r},
                                     pipeline=[{caption.format(True)}] + {TRAIN_PIPELINE!r}))
val_dataloader = dict(batch_size=5, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root={data_root!r},
                                   pipeline=[{caption.format(False)}] + {QUERY_PIPELINE!r},
                                   gallery_pipeline={GALLERY_PIPELINE!r}))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=2)
default_hooks = dict(logger=dict(interval=1))
"""
    config = tmp_path / 'tiny_fiq_ssn.py'
    config.write_text(text)
    work_dir = str(tmp_path / 'work')
    train_log = run_tool([tool('train.py'), str(config), '--work-dir', work_dir],
                         cwd=str(tmp_path))
    metrics_file = str(tmp_path / 'metrics.json')
    test_log = run_tool([tool('test.py'), str(config), osp.join(work_dir, 'epoch_2.pth'),
                         '--work-dir', work_dir, '--out', metrics_file, '--show-dir',
                         str(tmp_path / 'show'), '--show-num', '2'], cwd=str(tmp_path))
    with open(metrics_file) as f:
        metrics = json.load(f)
    return dict(root=tmp_path, work_dir=work_dir, train_log=train_log, test_log=test_log,
                metrics=metrics)


@pytest.mark.slow
def test_fashioniq_recipe_freezes_the_vision_tower_after_epoch_one(fiq_run):
    out = fiq_run['train_log']
    # The vision tower trains in epoch 0 and is frozen from epoch 1.
    assert out.count('froze the CLIP vision tower') == 1
    assert out.index('Epoch(train) [1]') < out.index('froze the CLIP vision tower') < out.index(
        'Epoch(train) [2]')


@pytest.mark.slow
def test_fashioniq_recipe_reuses_the_frozen_towers_features(fiq_run):
    out = fiq_run['train_log']
    assert out.count('Encoded the gallery: 42 images') == 2
    # The recipe's feature cache: the frozen tower's outputs are reused within epoch 2.
    reused = re.search(r'Epoch 1: feature cache holds (\d+) images; (\d+) image encodings '
                       r'reused, (\d+) computed', out)
    assert reused and int(reused.group(2)) > 0 and int(reused.group(1)) == int(reused.group(3))


@pytest.mark.slow
def test_fashioniq_training_keeps_the_best_checkpoint(fiq_run):
    work_dir = fiq_run['work_dir']
    assert osp.isfile(osp.join(work_dir, 'best_fiq_overall_epoch_1.pth')) or osp.isfile(
        osp.join(work_dir, 'best_fiq_overall_epoch_2.pth'))


@pytest.mark.slow
def test_fashioniq_test_tool_draws_the_pictures(fiq_run):
    assert len(glob.glob(str(fiq_run['root'] / 'show' / 'query_*.png'))) == 2


@pytest.mark.slow
def test_fashioniq_test_tool_metrics_and_table(fiq_run):
    out, metrics = fiq_run['test_log'], fiq_run['metrics']
    assert 'gallery protocol "original"' in out
    assert 'dress queries / gallery' in out and '9 / 14' in out
    assert list(metrics) == [f'fiq/{c}_R@{k}' for c in ('dress', 'shirt', 'toptee')
                             for k in (10, 50)] + ['fiq/avg_R@10', 'fiq/avg_R@50',
                                                   'fiq/overall']
    assert metrics['fiq/dress_R@50'] == 100.0  # 14-image galleries
    assert metrics['fiq/overall'] == pytest.approx(
        (metrics['fiq/avg_R@10'] + metrics['fiq/avg_R@50']) / 2)


@pytest.mark.slow
def test_dist_train_two_cpu_processes(tmp_path, tiny_clip_file):
    """tools/dist_train.sh with torchrun, 2 gloo processes, trains and validates."""
    data_root = str(tmp_path / 'cirr_dataset')
    make_tiny_cirr(data_root, num_images=25, num_val=13)
    config = write_tiny_config(tmp_path, data_root, tiny_clip_file, max_epochs=1)
    work_dir = tmp_path / 'work'
    env = dist_env()
    result = run_with_deadline(
        ['bash', osp.join(PROJECT_ROOT, 'tools', 'dist_train.sh'), config, '2', '--work-dir',
         str(work_dir), '--cfg-options', 'env_cfg.dist_cfg.backend=gloo',
         'model_wrapper_cfg.device_ids=None'],
        cwd=str(tmp_path), env=env)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    # 24 triplets, batch 4 per process: 3 iterations per epoch on each of the 2 ranks.
    assert 'Epoch(train) [1][3/3]' in out and 'cirr/Avg' in out
    assert (work_dir / 'epoch_1.pth').is_file()


def write_circo_config(path, base: str, data_root: str, clip_file: str, model: str = '') -> str:
    """A CIRCO config inheriting ``configs/circo/<base>``, shrunk to the tiny model."""
    path.write_text(f"""
_base_ = [{osp.join(PROJECT_ROOT, 'configs', 'circo', base)!r}]
model = dict(backbone=dict(arch={clip_file!r}, pretrained=None){model})
test_dataloader = dict(batch_size=64, num_workers=0, persistent_workers=False,
                       dataset=dict(data_root={data_root!r}, pipeline={QUERY_PIPELINE!r},
                                    gallery_pipeline={GALLERY_PIPELINE!r}))
# Small chunks: 2**20 similarities at a time (48 queries of the 21k gallery), never [N, G].
test_evaluator = dict(chunk_elems={1 << 20})
custom_hooks = [dict(type='SafeCheckpointLoaderHook'), dict(type='GalleryFeatureHook',
                                                             batch_size=512)]
""")
    return str(path)


def average_precision(ranked, gts, k):
    hits, total = 0, 0.0
    for r, image_id in enumerate(ranked[:k], start=1):
        if image_id in gts:
            hits += 1
            total += hits / r
    return total / min(len(gts), k)


@pytest.mark.slow
def test_circo_evaluates_a_cirr_checkpoint_over_20k_distractors(trained):
    """configs/circo/ssn_cirr_trained.py through tools/test.py: CIRCO val, 20,000 generated
    distractors, and the exported top-50 lists score the same mAP as the metric."""
    root = trained['root']
    circo = make_standin_circo(str(root / 'CIRCO'), num_distractors=20_000, splits=('val', ))
    config = write_circo_config(root / 'tiny_circo_ssn.py', 'ssn_cirr_trained.py',
                                circo['root'], str(root / 'tiny_clip.json'),
                                ', fusion=dict(num_heads=2, ffn_dim=64)')
    out = run_tool([osp.join(PROJECT_ROOT, 'tools', 'test.py'), config, trained['ckpt'],
                    '--work-dir', str(root / 'circo_work'), '--out', str(root / 'circo.json'),
                    '--export-dir', str(root / 'circo_export')], cwd=str(root))
    gallery_size = len(circo['ids'])
    assert gallery_size >= 21_000
    assert f'Encoded the gallery: {gallery_size} images' in out
    assert (f'CIRCO (%) of 220 queries, gallery of {gallery_size} images, reference kept in '
            'the gallery, text "{relative_caption}"') in out
    metrics = json.loads((root / 'circo.json').read_text())
    with open(root / 'circo_export' / 'circo_submission_ssn.json') as f:
        exported = json.load(f)
    records = {str(r['id']): r for r in circo['records']['val']}
    assert sorted(exported) == sorted(records)
    for k in (5, 10, 25, 50):
        expected = 100 * sum(average_precision(exported[q], set(r['gt_img_ids']), k)
                             for q, r in records.items()) / len(records)
        assert metrics[f'circo/mAP@{k}'] == pytest.approx(expected)
    aspects = {a for r in records.values() for a in r['semantic_aspects']}
    assert len(aspects) == 9
    assert {f'circo/{a}/mAP@10' for a in aspects} <= set(metrics)


@pytest.mark.slow
def test_zero_shot_baseline_exports_the_circo_test_split(tmp_path, tiny_clip_file):
    circo = make_standin_circo(str(tmp_path / 'CIRCO'), num_distractors=100,
                               splits=('test', ))
    config = write_circo_config(tmp_path / 'tiny_circo_clip.py', 'clip_baseline.py',
                                circo['root'], tiny_clip_file)
    out = run_tool([osp.join(PROJECT_ROOT, 'tools', 'test.py'), config, '--no-checkpoint',
                    '--split', 'test', '--work-dir', str(tmp_path / 'work'),
                    '--export-dir', str(tmp_path / 'export')], cwd=str(tmp_path))
    assert 'CIRCO submission file for 800 queries' in out
    path = tmp_path / 'export' / 'circo_submission_ssn.json'
    exported = json.loads(path.read_text())
    assert sorted(map(int, exported)) == list(range(800))
    assert all(len(ids) == len(set(ids)) == 50 for ids in exported.values())
    assert set(i for ids in exported.values() for i in ids) <= set(circo['ids'])
    assert path.stat().st_size < 5 * 1024 * 1024


def test_test_tool_needs_a_checkpoint_or_no_checkpoint(capsys):
    with pytest.raises(SystemExit):
        test_tool.parse_args(['c.py'])
    assert 'give either a CHECKPOINT or --no-checkpoint' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        test_tool.parse_args(['c.py', 'x.pth', '--no-checkpoint'])
    args = test_tool.parse_args(['c.py', '--no-checkpoint'])
    cfg = Config(dict(model=dict(type='CLIPBaseline', backbone=dict(
        type='OpenCLIPBackbone', pretrained='openai'))))
    merged = test_tool.merge_args(cfg, args)
    # Zero-shot: no checkpoint, and the CLIP weights are loaded.
    assert merged.get('load_from') is None
    assert 'load_pretrained' not in merged.model.backbone


def val_metrics(log: str) -> list:
    """The validation lines of a training log, without timings."""
    return [re.sub(r'\s+(data_)?time: [0-9.]+', '', line.split(' - mmengine - INFO - ')[-1])
            for line in log.splitlines() if 'Epoch(val)' in line and 'cirr/R@1' in line]


@pytest.mark.slow
def test_training_from_the_image_cache_gives_the_same_run(trained):
    """tools/build_image_cache.py, then the same training with --image-cache: the same
    validation metrics, and the stores are read, not rebuilt."""
    root, cache = trained['root'], str(trained['root'] / 'image_cache')
    out = run_tool([osp.join(PROJECT_ROOT, 'tools', 'build_image_cache.py'), trained['config'],
                    '--image-cache', cache], cwd=str(root))
    assert re.search(r'cirr_train-\w+: 25 images of 32x32', out)
    assert re.search(r'cirr_val-\w+: 25 images of 32x32', out)
    log = run_tool([osp.join(PROJECT_ROOT, 'tools', 'train.py'), trained['config'],
                    '--work-dir', str(root / 'cached_work'), '--image-cache', cache],
                   cwd=str(root))
    assert 'pipelines read preprocessed images from' in log
    assert 'images to preprocess' not in log  # built before, only opened
    assert val_metrics(log) and val_metrics(log) == val_metrics(trained['train_log'])
