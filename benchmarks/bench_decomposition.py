"""What the decomposition buys: SSN against its ablation and its ancestors, same data, same
budget, several seeds, on the shapes demo and its hard variant.

    python benchmarks/bench_decomposition.py                      # 3 seeds, the demo's budget
    python benchmarks/bench_decomposition.py --sets 1000 --epochs 4 --seeds 0 1 2   # smaller

Models (every one trained from scratch on the tiny demo CLIP, with the demo's optimiser,
schedule and batch; `--epochs` for all):

- ``ssn``: configs/demo/ssn_shapes.py;
- ``ssn_no_decomposition``: the same with ``model.degradation=False``;
- ``combiner``: CLIP4Cir's two stages (configs/demo/clip4cir_stage1_shapes.py, then
  clip4cir_combiner_shapes.py on its checkpoint), ``--epochs`` each: twice the epochs in all;
- ``combiner_equal_budget``: the same with ``--epochs // 2`` each, the others' budget;
- ``clip_sum``: CLIPBaseline fine-tuned with SSN's InfoNCE, ``combine='normalized'``;
- ``image_only`` / ``text_only``: no training of their own: stage 1's CLIP with the reference
  image alone or the text alone as the query (the floors).

Each is evaluated in-process on the validation split (reference removed, the img_set
subset), per query, so that SSN can be compared with each model query by query: the paired
difference of R@1 and Rsubset@1 hits (averaged over seeds) with a 95 % bootstrap interval
(2,000 resamples of the queries). Results: a JSON of every run under ``--out`` and the tables
on stdout (mean ± sample std over seeds, per instruction type, paired differences). Training on
CPU repeats bit for bit on one CPU type and library set, not across them.
"""
import argparse
import json
import os
import os.path as osp
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = osp.join(ROOT, 'configs', 'demo')
MODELS = ('ssn', 'ssn_no_decomposition', 'combiner', 'combiner_equal_budget', 'clip_sum',
          'image_only', 'text_only')
KEYS = ('R@1', 'R@5', 'R@10', 'R@50', 'Rsubset@1', 'Rsubset@2', 'Rsubset@3', 'Avg')


def train(config, work_dir, data_root, seed, epochs, extra=()):
    """tools/train.py; returns the last epoch's checkpoint."""
    ckpt = osp.join(work_dir, f'epoch_{epochs}.pth')
    if osp.isfile(ckpt):  # a finished run (the script resumes where it stopped)
        return ckpt
    args = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), config, '--work-dir', work_dir,
            '--cfg-options', f'data_root={data_root}', f'randomness.seed={seed}',
            f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}',
            f'max_epochs={epochs}', *extra]
    subprocess.run(args, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return ckpt


def per_query(config, ckpt, data_root, cfg_options=None):
    """Target rank and subset target rank of every validation query, and its group."""
    from mmengine.config import Config

    from ssn_plugin.apis import CIRRetriever
    from ssn_plugin.evaluation.functional import rank_gallery
    from ssn_plugin.registry import DATASETS
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    retriever = CIRRetriever(cfg, ckpt, device='cpu', batch_size=256)
    dataset_cfg = dict(cfg.val_dataloader.dataset, data_root=data_root)
    dataset = DATASETS.build(dataset_cfg)
    gallery = retriever.encode_dataset_gallery(dataset, progress=False)
    infos = [dataset.get_data_info(i) for i in range(len(dataset))]
    queries = torch.cat([retriever.encode_queries([i['ref_img_path'] for i in part],
                                                  [i['text'] for i in part])
                         for part in (infos[s:s + 256] for s in range(0, len(infos), 256))])
    ranked = rank_gallery(queries, gallery,
                          target_index=torch.tensor([i['target_index'] for i in infos]),
                          exclude_index=torch.tensor([i['ref_index'] for i in infos]),
                          subset_index=torch.tensor([i['subset_index'] for i in infos]))
    return dict(rank=ranked['target_rank'].tolist(),
                subset_rank=ranked['subset_target_rank'].tolist(),
                group=[i.get('group') for i in infos])


def recalls(result):
    rank, subset = np.asarray(result['rank']), np.asarray(result['subset_rank'])
    out = {f'R@{k}': 100 * float(np.mean(rank < k)) for k in (1, 5, 10, 50)}
    out.update({f'Rsubset@{k}': 100 * float(np.mean(subset < k)) for k in (1, 2, 3)})
    out['Avg'] = (out['R@5'] + out['Rsubset@1']) / 2
    return out


def run_seed(dataset, data_root, seed, args, results):
    """Every model of one dataset and seed missing from ``results``: {model: per-query
    result}."""
    work = osp.join(args.out, dataset, f'seed{seed}')
    if 'combiner_equal_budget' not in results and results:
        half = max(1, args.epochs // 2)
        stage1_cfg = osp.join(DEMO, 'clip4cir_stage1_shapes.py')
        combiner_cfg = osp.join(DEMO, 'clip4cir_combiner_shapes.py')
        first = train(stage1_cfg, osp.join(work, 'combiner_stage1_half'), data_root, seed, half)
        second = train(combiner_cfg, osp.join(work, 'combiner_half'), data_root, seed, half,
                       [f'load_from={first}'])
        results['combiner_equal_budget'] = per_query(combiner_cfg, second, data_root)
        return results
    ssn = osp.join(DEMO, 'ssn_shapes.py')
    stage1_cfg = osp.join(DEMO, 'clip4cir_stage1_shapes.py')
    runs = {
        'ssn': (ssn, []),
        'ssn_no_decomposition': (ssn, ['model.degradation=False']),
        'clip_sum': (stage1_cfg, ['model.combine=normalized', 'model.loss.type=SSNLoss']),
    }
    for name, (config, extra) in runs.items():
        ckpt = train(config, osp.join(work, name), data_root, seed, args.epochs, extra)
        options = {'model.degradation': False} if name == 'ssn_no_decomposition' else None
        if name == 'clip_sum':
            options = {'model.combine': 'normalized', 'model.loss.type': 'SSNLoss'}
        results[name] = per_query(config, ckpt, data_root, options)
    stage1 = train(stage1_cfg, osp.join(work, 'combiner_stage1'), data_root, seed, args.epochs)
    combiner_cfg = osp.join(DEMO, 'clip4cir_combiner_shapes.py')
    stage2 = train(combiner_cfg, osp.join(work, 'combiner'), data_root, seed, args.epochs,
                   [f'load_from={stage1}'])
    results['combiner'] = per_query(combiner_cfg, stage2, data_root)
    for mode in ('image', 'text'):
        results[f'{mode}_only'] = per_query(stage1_cfg, stage1, data_root, {'model.mode': mode})
    return run_seed(dataset, data_root, seed, args, results)


def bootstrap(diff, rng, resamples=2000):
    """95 % interval of the mean of per-query differences."""
    means = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(resamples)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def report(dataset, runs):
    """runs: {seed: {model: per-query result}} -> printed tables."""
    print(f'\n### {dataset}: mean ± sample std over seeds {sorted(runs)}\n')
    print('| model | ' + ' | '.join(KEYS) + ' |')
    print('|---|' + '---:|' * len(KEYS))
    for model in MODELS:
        values = [recalls(runs[s][model]) for s in sorted(runs)]
        cells = []
        for key in KEYS:
            seq = [v[key] for v in values]
            spread = statistics.stdev(seq) if len(seq) > 1 else 0.0
            cells.append(f'{statistics.mean(seq):.2f} ± {spread:.2f}')
        print(f'| {model} | ' + ' | '.join(cells) + ' |')
    groups = sorted({g for g in next(iter(runs.values()))['ssn']['group'] if g})
    print('\nR@1 per instruction type (mean over seeds):\n')
    print('| model | ' + ' | '.join(groups) + ' |')
    print('|---|' + '---:|' * len(groups))
    for model in MODELS:
        cells = []
        for group in groups:
            hits = [np.mean([r < 1 for r, g in zip(runs[s][model]['rank'],
                                                     runs[s][model]['group']) if g == group])
                    for s in sorted(runs)]
            cells.append(f'{100 * np.mean(hits):.1f}')
        print(f'| {model} | ' + ' | '.join(cells) + ' |')
    rng = np.random.default_rng(0)
    print('\nSSN minus each model, per query (hits averaged over seeds), 95 % bootstrap '
          'interval:\n')
    print('| other model | R@1 difference | interval | Rsubset@1 difference | interval |')
    print('|---|---:|---|---:|---|')

    def hits(model, key, k=1):
        return np.mean([np.asarray(runs[s][model][key]) < k for s in sorted(runs)], axis=0)
    for model in MODELS[1:]:
        row = []
        for key in ('rank', 'subset_rank'):
            diff = hits('ssn', key) - hits(model, key)
            low, high = bootstrap(diff, rng)
            row += [f'{100 * diff.mean():+.2f}', f'[{100 * low:+.2f}, {100 * high:+.2f}]']
        print(f'| {model} | ' + ' | '.join(row) + ' |')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--datasets', nargs='*', default=['standard', 'hard'])
    parser.add_argument('--seeds', type=int, nargs='*', default=[0, 1, 2])
    parser.add_argument('--epochs', type=int, default=12)
    parser.add_argument('--sets', type=int, default=3000, help='training image sets')
    parser.add_argument('--val-sets', type=int, default=500)
    parser.add_argument('--out', default=osp.join(ROOT, 'work_dirs', 'bench_decomposition'))
    args = parser.parse_args()
    from ssn_plugin.datasets import generate_shapes_dataset
    start = time.time()
    print(f'{time.strftime("%Y-%m-%d")}, {platform.processor() or platform.machine()}, '
          f'{os.cpu_count()} CPUs, torch {torch.__version__}; {args}')
    for dataset in args.datasets:
        data_root = osp.join(args.out, f'data_{dataset}_{args.sets}')
        if not osp.isdir(data_root):
            generate_shapes_dataset(data_root, seed=0, num_train_sets=args.sets,
                                    num_val_sets=args.val_sets, difficulty=dataset)
        runs = {}
        for seed in args.seeds:
            cache = osp.join(args.out, dataset, f'seed{seed}', 'per_query.json')
            done = json.load(open(cache)) if osp.isfile(cache) else {}
            if set(MODELS) <= set(done):
                runs[seed] = done
                continue
            runs[seed] = run_seed(dataset, data_root, seed, args, done)
            with open(cache, 'w') as f:
                json.dump(runs[seed], f)
            print(f'{dataset} seed {seed} done after {time.time() - start:.0f} s', flush=True)
        report(dataset, runs)
    print(f'\n{time.time() - start:.0f} s in all')


if __name__ == '__main__':
    main()
