"""Evaluation maths: our chunked ranking + recall against a full-argsort baseline.

Each case runs in its own subprocess so that peak memory (RSS high-water mark on CPU,
``max_memory_allocated`` on GPU) belongs to that case alone.

    python benchmarks/bench_ranking.py                 # all cases, CPU
    python benchmarks/bench_ranking.py --device cuda   # on a GPU
    python benchmarks/bench_ranking.py --cases 4181x2297

The baseline is the straightforward implementation of the same definition: the whole [N, G]
similarity matrix, ``torch.argsort`` of every row, and the target's position found in the
sorted rows (index-based; CLIP4Cir additionally builds [N, G] arrays of names, which costs more).
It is skipped where its estimated memory exceeds ``--baseline-limit-gb``.
"""
import argparse
import json
import platform
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from ssn_plugin.evaluation.functional import rank_gallery, recall_at_k

CASES = {
    '4181x2297': (4181, 2297),  # CIRR val
    '6016x15536': (6016, 15536),  # Fashion-IQ val, all categories
    '4181x100000': (4181, 100_000),
    '4181x1000000': (4181, 1_000_000),
}
DIM = 512


def status_mb(field: str) -> float:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f'{field} not in /proc/self/status (Linux only)')


def reset_peak_rss() -> None:
    """Reset the RSS high-water mark (VmHWM) to the current RSS (Linux)."""
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')


def make_inputs(num_query, num_gallery, device):
    g = torch.Generator().manual_seed(0)
    gallery = F.normalize(torch.randn(num_gallery, DIM, generator=g), dim=-1).to(device)
    target = torch.randint(0, num_gallery, (num_query, ), generator=g).to(device)
    ref = (target + 1) % num_gallery
    query = F.normalize(gallery[target] + 0.05 * torch.randn(num_query, DIM, generator=g)
                        .to(device), dim=-1)
    return query, gallery, ref, target


def ours(query, gallery, ref, target):
    ranks = rank_gallery(query, gallery, target_index=target, exclude_index=ref)['target_rank']
    return {k: recall_at_k(ranks, k) for k in (1, 5, 10, 50)}


def baseline(query, gallery, ref, target):
    scores = query.float() @ gallery.float().t()
    order = torch.argsort(scores, dim=1, descending=True)
    position = (order == target[:, None]).int().argmax(dim=1)
    ref_before = (order == ref[:, None]).int().argmax(dim=1) < position
    ranks = position - ref_before.long()
    n = ranks.numel()
    return {k: 100.0 * int((ranks < k).sum()) / n for k in (1, 5, 10, 50)}


def run_case(impl, case, device):
    num_query, num_gallery = CASES[case]
    query, gallery, ref, target = make_inputs(num_query, num_gallery, device)
    fn = ours if impl == 'ours' else baseline
    if device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        reset_peak_rss()
        base = status_mb('VmRSS')
    start = time.perf_counter()
    recalls = fn(query, gallery, ref, target)
    if device == 'cuda':
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if device == 'cuda':
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = status_mb('VmHWM') - base
    print(json.dumps(dict(impl=impl, case=case, seconds=seconds, peak_extra_mb=peak,
                          recalls=recalls)))


def baseline_gb(num_query, num_gallery) -> float:
    # float32 scores + int64 argsort + the int comparison matrix
    return num_query * num_gallery * (4 + 8 + 4) / 2**30


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--cases', nargs='+', default=list(CASES))
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--baseline-limit-gb', type=float, default=12.0)
    parser.add_argument('--_run', nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._run:
        torch.set_grad_enabled(False)
        run_case(args._run[0], args._run[1], args.device)
        return

    print(f'# {time.strftime("%Y-%m-%d")} {platform.node()} {platform.processor() or ""} '
          f'torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}')
    print('| N x G | ours s | ours peak MB | baseline s | baseline peak MB | time ratio '
          '| memory ratio | recalls equal |')
    print('|---|---|---|---|---|---|---|---|')
    for case in args.cases:
        rows = {}
        for impl in ('ours', 'baseline'):
            if impl == 'baseline' and baseline_gb(*CASES[case]) > args.baseline_limit_gb:
                rows[impl] = None
                continue
            out = subprocess.run([sys.executable, __file__, '--device', args.device, '--_run',
                                  impl, case], capture_output=True, text=True)
            if out.returncode != 0:
                raise RuntimeError(out.stderr[-2000:])
            rows[impl] = json.loads(out.stdout.strip().splitlines()[-1])
        o, b = rows['ours'], rows['baseline']
        if b is None:
            need = baseline_gb(*CASES[case])
            print(f'| {case} | {o["seconds"]:.2f} | {o["peak_extra_mb"]:.0f} | not run '
                  f'(needs ~{need:.0f} GB) | | | | |')
        else:
            print(f'| {case} | {o["seconds"]:.2f} | {o["peak_extra_mb"]:.0f} | '
                  f'{b["seconds"]:.2f} | {b["peak_extra_mb"]:.0f} | '
                  f'{b["seconds"] / o["seconds"]:.1f}x faster | '
                  f'{b["peak_extra_mb"] / max(o["peak_extra_mb"], 1):.1f}x less | '
                  f'{o["recalls"] == b["recalls"]} |')
        sys.stdout.flush()


if __name__ == '__main__':
    main()
