"""The GPU check of the release recipe: one prepared script for a machine with a GPU.

1. The recipe's training step through mmengine's real path (``SSN.train_step`` with the recipe's
   ``AmpOptimWrapper`` and its learning-rate split), ViT-B/32 (random init, nothing downloaded),
   batch 128, in fp16 (GradScaler) and bf16: throughput, peak GPU memory, finite losses, the
   loss scale after the steps.
2. When two or more GPUs are visible: ``tools/dist_train.sh`` on the generated shapes demo
   with 2 processes and ``--amp`` (NCCL), as a smoke run.

Not run in CI. On a GPU machine, from the repository root:

    python benchmarks/gpu_check.py                    # about 2-4 minutes on one H100/H200
    python benchmarks/gpu_check.py --steps 5 --skip-dist

``--cpu-dry-run`` runs the same code on the CPU with tiny sizes (bf16 only; AmpOptimWrapper's
GPU check answered True, as the test suite does) to check the script itself.
"""
import argparse
import copy
import json
import os
import os.path as osp
import subprocess
import sys
import time

import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.structures import BaseDataElement

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
import ssn_plugin.models  # noqa: E402,F401
from ssn_plugin.registry import MODELS  # noqa: E402

CAPTION = 'remove the two dogs and make the background a sunny beach with people'
TINY_ARCH = dict(embed_dim=32,
                 vision_cfg=dict(image_size=32, layers=1, width=64, patch_size=8, head_width=32),
                 text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1))


def recipe(cpu_dry_run: bool) -> Config:
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'cirr', 'ssn.py'))
    cfg.model.backbone.pretrained = None  # random init: nothing to download
    if cpu_dry_run:
        cfg.model.backbone.arch = TINY_ARCH
        cfg.model.fusion.update(num_heads=2, ffn_dim=64)
    return cfg


def amp_steps(dtype: str, batch: int, steps: int, cpu_dry_run: bool) -> dict:
    cfg = recipe(cpu_dry_run)
    device = 'cpu' if cpu_dry_run else 'cuda'
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(cfg.model)).to(device).train()
    wrapper_cfg = copy.deepcopy(cfg.optim_wrapper)
    wrapper_cfg.update(type='AmpOptimWrapper', dtype=dtype)
    wrapper = build_optim_wrapper(model, wrapper_cfg)
    side = model.image_size[0]
    data = dict(inputs=dict(
        ref_img=list(torch.randint(0, 256, (batch, 3, side, side), dtype=torch.uint8)),
        tgt_img=list(torch.randint(0, 256, (batch, 3, side, side), dtype=torch.uint8))),
        data_samples=[BaseDataElement(metainfo=dict(text=CAPTION)) for _ in range(batch)])
    log = model.train_step(data, wrapper)  # warm-up (cuDNN/cuBLAS heuristics, allocator)
    if device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    losses = []
    for _ in range(steps):
        log = model.train_step(data, wrapper)
        losses.append(log['loss'].item())
    if device == 'cuda':
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    return dict(
        dtype=dtype, batch=batch, step_s=round(seconds, 4),
        triplets_per_s=round(batch / seconds, 1),
        peak_gpu_mb=(round(torch.cuda.max_memory_allocated() / 2**20)
                     if device == 'cuda' else None),
        losses_finite=all(map(lambda x: x == x and abs(x) != float('inf'), losses)),
        first_loss=round(losses[0], 4), last_loss=round(losses[-1], 4),
        loss_scale=float(wrapper.loss_scaler.get_scale()) if wrapper.loss_scaler.is_enabled()
        else None)


def dist_smoke(work_dir: str) -> dict:
    """2 processes of tools/dist_train.sh on a small generated demo with --amp."""
    env = dict(os.environ, PYTHON=sys.executable, PORT='29517')
    cmd = ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'),
           osp.join(ROOT, 'configs', 'demo', 'ssn_shapes.py'), '2', '--amp', '--work-dir',
           work_dir, '--cfg-options',
           f'train_dataloader.dataset.data_root={work_dir}/data',
           f'val_dataloader.dataset.data_root={work_dir}/data',
           f'test_dataloader.dataset.data_root={work_dir}/data', 'train_cfg.max_epochs=1',
           'train_cfg.val_interval=1']
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    out = result.stdout + result.stderr
    return dict(returncode=result.returncode, seconds=round(time.perf_counter() - start, 1),
                validated='cirr/Avg' in out, tail=out[-1500:] if result.returncode else '')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch', type=int, default=128)
    parser.add_argument('--steps', type=int, default=20)
    parser.add_argument('--dtypes', nargs='+', default=['float16', 'bfloat16'])
    parser.add_argument('--skip-dist', action='store_true')
    parser.add_argument('--work-dir', default='work_dirs/gpu_check')
    parser.add_argument('--cpu-dry-run', action='store_true')
    args = parser.parse_args()
    if args.cpu_dry_run:
        from mmengine.optim.optimizer import amp_optimizer_wrapper
        amp_optimizer_wrapper.is_cuda_available = lambda: True
        args.batch, args.steps, args.dtypes, args.skip_dist = 4, 2, ['bfloat16'], True
    elif not torch.cuda.is_available():
        sys.exit('no GPU visible; use --cpu-dry-run to check the script on a CPU')

    device = 'cpu' if args.cpu_dry_run else torch.cuda.get_device_name()
    print(f'# {time.strftime("%Y-%m-%d %H:%M")} {device}, torch {torch.__version__}, '
          f'batch {args.batch}, {args.steps} timed steps after 1 warm-up', flush=True)
    for dtype in args.dtypes:
        print(json.dumps(dict(check='amp_train_step', **amp_steps(
            dtype, args.batch, args.steps, args.cpu_dry_run))), flush=True)
    if not args.skip_dist and torch.cuda.device_count() >= 2:
        print(json.dumps(dict(check='dist_train_2_gpus', **dist_smoke(args.work_dir))),
              flush=True)
    elif not args.skip_dist:
        print(json.dumps(dict(check='dist_train_2_gpus', skipped='fewer than 2 GPUs')))


if __name__ == '__main__':
    main()
