"""SSN training-step and gallery-encoding throughput on a CLIP ViT-B/32-shaped model.

Random initialisation (no download); each case runs in its own subprocess so its peak memory
is its own. The baseline in the same run is a plain CLIP fine-tuning step on the same backbone
(CLIP4Cir's "sum" composition: normalize(v_ref + t) against normalize(v_tgt), one InfoNCE), so the
ratio shows what SSN's decomposition, fusion and second branch cost.

    python benchmarks/bench_train_step.py                       # CPU, batch 8 and 32
    python benchmarks/bench_train_step.py --device cuda --amp fp16 --batch-sizes 32 128
"""
import argparse
import json
import platform
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from mmengine.structures import BaseDataElement

import ssn_plugin.models  # noqa: F401
from ssn_plugin.registry import MODELS

CAPTION = 'remove the two dogs and make the background a sunny beach with people'


def build(device):
    torch.manual_seed(0)
    model = MODELS.build(dict(type='SSN', backbone=dict(
        type='OpenCLIPBackbone', arch='ViT-B-32', pretrained=None)))
    return model.to(device)


def clip_sum_loss(model, ref, tgt, texts):
    clip = model.clip
    v_ref, _ = clip.encode_image(ref)
    v_tgt, _ = clip.encode_image(tgt)
    t, _, _ = clip.encode_text(texts)
    logits = 100 * F.normalize(v_ref + t, dim=-1) @ F.normalize(v_tgt, dim=-1).t()
    return dict(loss=F.cross_entropy(logits, torch.arange(len(texts), device=logits.device)))


def run_case(impl, batch_size, device, amp, steps):
    model = build(device)
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    scaler = torch.amp.GradScaler(device, enabled=(amp == 'fp16'))
    dtype = {'fp16': torch.float16, 'bf16': torch.bfloat16}.get(amp)
    ref = torch.randn(batch_size, 3, 224, 224, device=device)
    tgt = torch.randn(batch_size, 3, 224, 224, device=device)
    texts = [CAPTION] * batch_size
    samples = [BaseDataElement(metainfo=dict(text=CAPTION)) for _ in range(batch_size)]

    def step():
        with torch.autocast(device_type=device, dtype=dtype, enabled=dtype is not None):
            if impl == 'ssn':
                losses = model.loss(dict(ref_img=ref, tgt_img=tgt), samples)
            else:
                losses = clip_sum_loss(model, ref, tgt, texts)
            loss = sum(v for k, v in losses.items() if 'loss' in k)
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    step()  # warm-up
    if device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == 'cuda':
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == 'cuda' else
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return dict(impl=impl, batch=batch_size, step_s=seconds, triplets_per_s=batch_size / seconds,
                peak_mb=peak)


def run_gallery(batch_size, device, amp, steps):
    model = build(device)
    model.eval()
    dtype = {'fp16': torch.float16, 'bf16': torch.bfloat16}.get(amp)
    images = torch.randn(batch_size, 3, 224, 224, device=device)
    with torch.no_grad(), torch.autocast(device_type=device, dtype=dtype,
                                         enabled=dtype is not None):
        model.gallery_features(images)
        if device == 'cuda':
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            model.gallery_features(images)
        if device == 'cuda':
            torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    return dict(impl='gallery', batch=batch_size, images_per_s=batch_size / seconds)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--amp', choices=['none', 'fp16', 'bf16'], default='none')
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[8, 32])
    parser.add_argument('--steps', type=int, default=3)
    parser.add_argument('--_run', nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    amp = None if args.amp == 'none' else args.amp
    if args._run:
        impl, batch = args._run[0], int(args._run[1])
        out = (run_gallery(batch, args.device, amp, args.steps) if impl == 'gallery' else
               run_case(impl, batch, args.device, amp, args.steps))
        print(json.dumps(out))
        return

    name = torch.cuda.get_device_name() if args.device == 'cuda' else platform.processor()
    print(f'# {time.strftime("%Y-%m-%d")} {platform.node()} {name} torch {torch.__version__}, '
          f'{torch.get_num_threads()} threads, device {args.device}, amp {args.amp}, '
          f'{args.steps} timed steps after 1 warm-up')
    print('| batch | SSN triplets/s | SSN peak MB | CLIP-sum triplets/s | CLIP-sum peak MB | '
          'SSN step time / CLIP-sum step time | gallery images/s |')
    print('|---|---|---|---|---|---|---|')

    def sub(impl, batch):
        cmd = [sys.executable, __file__, '--device', args.device, '--amp', args.amp, '--steps',
               str(args.steps), '--_run', impl, str(batch)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
        return json.loads(out.stdout.strip().splitlines()[-1])

    for batch in args.batch_sizes:
        ssn, base, gallery = sub('ssn', batch), sub('clip_sum', batch), sub('gallery', batch)
        print(f'| {batch} | {ssn["triplets_per_s"]:.2f} | {ssn["peak_mb"]:.0f} | '
              f'{base["triplets_per_s"]:.2f} | {base["peak_mb"]:.0f} | '
              f'{ssn["step_s"] / base["step_s"]:.2f} | {gallery["images_per_s"]:.1f} |')
        sys.stdout.flush()


if __name__ == '__main__':
    main()
