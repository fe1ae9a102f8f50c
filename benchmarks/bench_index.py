"""Gallery search at scale: every index backend against exact search, in one run.

    python benchmarks/bench_index.py               # 100k and 1M x 512, and the demo model
    python benchmarks/bench_index.py --quick       # about 20 s: three lines
        recall10_faiss=...   (faiss, default settings, 100k x 256)
        speedup_faiss=...    (exact latency / faiss latency, one query, same gallery)
        recall10_milvus=...  (Milvus Lite, 20k x 256)

Galleries have the structure of real embeddings: unit vectors around G/1000 centres, spread
mostly within a 64-dimensional subspace (not uniform noise in all 512 dimensions, on which every
ANN index looks far worse than on real data), queries drawn from the same mixture. ``--demo`` adds the demo model's features (configs/demo/ssn_shapes.py, random init,
seed 0) of the generated shapes images, with composed queries of their captions.

Per backend: build time (s), index size (MB: features, the serialised faiss index, or the Milvus
Lite folder), one-query latency p50/p99 over ``--queries`` queries issued one at a time, the
per-query time of batches of 16, and recall@10 against exact float32 search (the fraction of the
true top 10 found). *previous retriever* is the path CIRRetriever took before the index
(``rank_gallery`` per query, which checks the whole gallery for NaN each time), as the baseline.
"""
import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time

import numpy as np
import torch

from ssn_plugin.evaluation.functional import rank_gallery
from ssn_plugin.index import GalleryIndex


def clustered(rng, n, d, like=None, spread=0.8, intrinsic=64, seed=0):
    """n unit vectors around the centres of a gallery of ``like`` (default n) rows, one centre
    per 1000 rows, the spread living mostly in a 64-dim subspace (CLIP embeddings occupy a
    low-dimensional part of their space) plus a little isotropic noise. Centres and subspace
    come from ``seed``; ``rng`` draws the points."""
    fixed = np.random.default_rng(seed)
    centres = fixed.standard_normal((max(1, (like or n) // 1000), d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    basis = np.linalg.qr(fixed.standard_normal((d, intrinsic)))[0].T.astype(np.float32)
    out = np.empty((n, d), np.float32)
    for start in range(0, n, 100_000):  # bounded temporaries at 1M x 512
        part = slice(start, min(start + 100_000, n))
        count = part.stop - part.start
        rows = centres[rng.integers(0, len(centres), count)]
        rows += spread * (rng.standard_normal((count, intrinsic)).astype(np.float32)
                          / np.sqrt(intrinsic)) @ basis
        rows += 0.1 * rng.standard_normal((count, d)).astype(np.float32) / np.sqrt(d)
        out[part] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out


def latency(search, queries, batch=16):
    """p50 and p99 (ms) of one query at a time, and ms per query in batches of ``batch``."""
    search(queries[:2])  # warm-up
    times = []
    for q in queries:
        start = time.perf_counter()
        search(q[None])
        times.append((time.perf_counter() - start) * 1000)
    start = time.perf_counter()
    for i in range(0, len(queries), batch):
        search(queries[i:i + batch])
    per_query = (time.perf_counter() - start) * 1000 / len(queries)
    return statistics.median(times), float(np.percentile(times, 99)), per_query


def recall(ids, truth):
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(ids, truth)]))


def folder_mb(path):
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total / 2**20


def index_mb(index):
    backend = index.backend
    if backend.name == 'exact':
        return sum(s.feats.nbytes for s in index.shards) / 2**20
    if backend.name == 'faiss':
        return len(backend.faiss.serialize_index(backend.faiss_index)) / 2**20
    return folder_mb(os.path.dirname(backend.uri_used))


def run_case(label, build, gallery, queries, truth, rows):
    start = time.perf_counter()
    index = build()
    built = time.perf_counter() - start
    p50, p99, batched = latency(lambda q: index.search_ids(q, 10), queries)
    found = recall(index.search_ids(queries, 10)[1], truth)
    rows.append(dict(case=label, build_s=built, mb=index_mb(index), p50=p50, p99=p99,
                     batch16=batched, recall=found))
    print(f'  {label}: build {built:.1f} s, {rows[-1]["mb"]:.0f} MB, p50 {p50:.2f} ms, '
          f'p99 {p99:.2f} ms, batch-16 {batched:.2f} ms/query, recall@10 {found:.3f}',
          flush=True)
    return index


def milvus(gallery, names, root):
    return GalleryIndex.from_features(
        gallery, names, backend=dict(type='milvus', uri=os.path.join(root, 'gallery.db')))


def bench_gallery(gallery, queries, backends, rows, with_baseline=True):
    names = [str(i) for i in range(len(gallery))]
    exact = GalleryIndex.from_features(gallery, names)
    truth = exact.search_ids(queries, 10)[1]
    if with_baseline:
        tensor = torch.from_numpy(gallery)
        p50, p99, batched = latency(
            lambda q: rank_gallery(torch.from_numpy(q), tensor, topk=10), queries[:20])
        rows.append(dict(case='previous retriever (rank_gallery per query)', build_s=0.0,
                         mb=gallery.nbytes / 2**20, p50=p50, p99=p99, batch16=batched,
                         recall=1.0))
        print(f'  previous retriever: p50 {p50:.1f} ms, batch-16 {batched:.1f} ms/query',
              flush=True)
    run_case('exact float32', lambda: exact, gallery, queries, truth, rows)
    results = {}
    for label, spec in backends:
        if spec == 'milvus':
            root = tempfile.mkdtemp()
            results[label] = run_case(label, lambda: milvus(gallery, names, root), gallery,
                                      queries, truth, rows)
            shutil.rmtree(root)
        else:
            results[label] = run_case(label, lambda: GalleryIndex.from_features(
                gallery, names, **spec), gallery, queries, truth, rows)
            if 'IVF' in label:
                nprobe_sweep(label, results[label], queries, truth, rows)
    return rows


def table(title, rows):
    exact = next(r for r in rows if r['case'] == 'exact float32')
    print(f'\n{title}\n')
    print('| backend | build s | size MB | one query p50 ms | p99 ms | batch 16, ms/query | '
          'recall@10 | speed-up (exact p50 / p50) |')
    print('|---|---:|---:|---:|---:|---:|---:|---:|')
    for r in rows:
        print(f'| {r["case"]} | {r["build_s"]:.1f} | {r["mb"]:.0f} | {r["p50"]:.2f} | '
              f'{r["p99"]:.2f} | {r["batch16"]:.2f} | {r["recall"]:.3f} | '
              f'{exact["p50"] / r["p50"]:.1f}x |')


def faiss_backends(n):
    """faiss's IVF with the number of lists the backend picks for n rows (trained on at most
    100k rows); its nprobe is swept on the one trained index by bench_gallery."""
    nlist = 2 ** round(np.log2(4 * np.sqrt(n)))
    return [(f'faiss IVF{nlist},Flat', dict(backend=dict(
        type='faiss', factory=f'IVF{nlist},Flat', train_rows=min(n, 100_000))))]


def nprobe_sweep(label, index, queries, truth, rows):
    """The same trained IVF index at nprobe = nlist/64, /32, /16 (the default), /8."""
    faiss = index.backend.faiss
    nlist = faiss.try_extract_index_ivf(index.backend.faiss_index).nlist
    build = rows[-1]['build_s']
    rows.pop()
    for nprobe in sorted({max(1, nlist // f) for f in (64, 32, 16, 8)}):
        faiss.ParameterSpace().set_index_parameters(index.backend.faiss_index,
                                                    f'nprobe={nprobe}')
        run_case(f'{label} nprobe={nprobe}', lambda: index, None, queries, truth, rows)
        rows[-1]['build_s'] = build


def demo_features(count_sets, queries):
    """The demo model's gallery features of generated images and composed queries."""
    from ssn_plugin.apis import CIRRetriever
    from ssn_plugin.datasets import generate_shapes_dataset
    from ssn_plugin.registry import MODELS
    import glob
    import json
    root = tempfile.mkdtemp()
    generate_shapes_dataset(root, num_train_sets=1, num_val_sets=count_sets)
    paths = sorted(glob.glob(os.path.join(root, 'dev', '*.png')))
    config = os.path.join(os.path.dirname(__file__), '..', 'configs', 'demo', 'ssn_shapes.py')
    retriever = CIRRetriever(config, device='cpu', batch_size=256)
    torch.manual_seed(0)
    retriever.model.load_state_dict(MODELS.build(retriever.cfg.model).state_dict())
    retriever.model.eval()
    feats = retriever.encode_images(paths, progress=False).numpy()
    with open(os.path.join(root, 'cirr', 'captions', 'cap.rc2.val.json')) as f:
        records = json.load(f)[:queries]
    refs = [os.path.join(root, 'dev', f'{r["reference"]}.png') for r in records]
    query = retriever.encode_queries(refs, [r['caption'] for r in records]).numpy()
    shutil.rmtree(root)
    return feats, query


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--sizes', type=int, nargs='*', default=[100_000, 1_000_000])
    parser.add_argument('--dim', type=int, default=512)
    parser.add_argument('--queries', type=int, default=200)
    parser.add_argument('--milvus-max', type=int, default=100_000,
                        help='largest gallery given to Milvus Lite')
    parser.add_argument('--hnsw-max', type=int, default=1_000_000,
                        help='largest gallery given to HNSW32 (its build is slow on 2 cores)')
    parser.add_argument('--demo-sets', type=int, default=1000,
                        help='shapes image sets (6 images each) for the demo features; 0: none')
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count())
    print(f'{time.strftime("%Y-%m-%d")}, {platform.processor() or platform.machine()}, '
          f'{os.cpu_count()} CPUs, torch {torch.__version__}, numpy {np.__version__}')
    rng = np.random.default_rng(0)
    if args.quick:
        gallery = clustered(rng, 100_000, 256)
        queries = clustered(np.random.default_rng(1), 100, 256, like=100_000)
        rows = bench_gallery(gallery, queries, faiss_backends(100_000), [],
                             with_baseline=False)
        small, small_q = gallery[:20_000], queries
        milvus_rows = bench_gallery(small, small_q, [('milvus', 'milvus')], [],
                                    with_baseline=False)
        nlist = 2 ** round(np.log2(4 * np.sqrt(100_000)))  # what the backend picks
        default = next(r for r in rows if r['case'].endswith(f'nprobe={max(8, nlist // 16)}'))
        print(f'recall10_faiss={default["recall"]:.4f}')
        print(f'speedup_faiss={rows[0]["p50"] / default["p50"]:.2f}')
        print(f'recall10_milvus={milvus_rows[1]["recall"]:.4f}')
        return
    for n in args.sizes:
        print(f'\ngallery {n} x {args.dim}', flush=True)
        gallery = clustered(rng, n, args.dim)
        queries = clustered(np.random.default_rng(1), args.queries, args.dim, like=n)
        backends = [('exact float16', dict(dtype='float16'))] + faiss_backends(n)
        if n <= args.hnsw_max:
            backends.append(('faiss HNSW32 (efSearch=128)',
                             dict(backend=dict(type='faiss', factory='HNSW32'))))
        if n <= args.milvus_max:
            backends.append(('Milvus Lite (FLAT)', 'milvus'))
        table(f'{n} x {args.dim}, clustered', bench_gallery(gallery, queries, backends, []))
        del gallery
    if args.demo_sets:
        feats, queries = demo_features(args.demo_sets, args.queries)
        print(f'\ndemo model features {feats.shape}', flush=True)
        backends = [('exact float16', dict(dtype='float16')),
                    ('faiss HNSW32 (efSearch=128)',
                     dict(backend=dict(type='faiss', factory='HNSW32'))),
                    ('faiss IVF64,Flat', dict(backend=dict(type='faiss', factory='IVF64,Flat'))),
                    ('Milvus Lite (FLAT)', 'milvus')]
        table(f'demo model, {feats.shape[0]} x {feats.shape[1]}',
              bench_gallery(feats, queries, backends, []))


if __name__ == '__main__':
    main()
