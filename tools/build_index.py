"""Build or update an index folder of a gallery, on one process or many.

    python tools/build_index.py CONFIG CHECKPOINT --gallery DIR --out INDEX_DIR \
        [--dtype float16] [--backend faiss --backend-args factory=IVF4096,Flat] [--export DIR]
    bash tools/dist_build_index.sh CONFIG CHECKPOINT N_GPUS --gallery DIR --out INDEX_DIR

Run again on the same folder after the gallery changed: only new or changed files are encoded,
deleted ones dropped; a build that was killed resumes where it stopped. With N processes each
encodes every N-th chunk and rank 0 commits them, giving the shards one process would write
(the folder must be on storage every process sees). ``--backend`` prepares that backend's index
(FAISS trained and saved, a Milvus collection filled); ``--export`` writes ``features.npy`` and
``table.tsv`` (id, name, path) for another vector database. Unreadable files are listed and
kept out; without ``--skip-unreadable`` the tool then exits with an error (the index holds the
others, so a rerun encodes only what was missing).
"""
import argparse
import os

import torch
import torch.distributed as torch_dist

from ssn_plugin.apis import CIRRetriever
from ssn_plugin.apis.gallery import gallery_files, unreadable_gallery
from ssn_plugin.cli import shutdown_process_group
from ssn_plugin.index import parse_backend
from ssn_plugin.index import GalleryIndex, IndexFolder
from ssn_plugin.index.folder import DEFAULT_SHARD_ROWS, DTYPES


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Build or update a gallery index folder')
    parser.add_argument('config', help='model config file')
    parser.add_argument('checkpoint', help='checkpoint from tools/train.py')
    parser.add_argument('--gallery', required=True, help='folder of images (recursive)')
    parser.add_argument('--out', required=True, help='the index folder (created or updated)')
    parser.add_argument('--dtype', choices=DTYPES, default='float32',
                        help='stored feature type (float16 halves memory)')
    parser.add_argument('--shard-rows', type=int, default=DEFAULT_SHARD_ROWS,
                        help='images per shard and per committed chunk')
    parser.add_argument('--backend', default='exact', help='exact, faiss or milvus')
    parser.add_argument('--backend-args', nargs='*', default=[], metavar='KEY=VALUE',
                        help='backend arguments, e.g. factory=HNSW32 search_params=efSearch=128')
    parser.add_argument('--export', help='also write features.npy and table.tsv here')
    parser.add_argument('--skip-unreadable', action='store_true',
                        help='list unreadable files but do not fail')
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--device', help='cuda or cpu (default: cuda when available)')
    parser.add_argument('--launcher', choices=['none', 'pytorch'], default='none')
    return parser.parse_args(argv)


def start_processes(args):
    """(rank, world size, device, barrier) of this process."""
    if args.launcher == 'none':
        return 0, 1, args.device, lambda: None
    rank, world = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])
    if torch.cuda.is_available() and args.device != 'cpu':
        local = int(os.environ.get('LOCAL_RANK', 0))
        torch.cuda.set_device(local)
        torch_dist.init_process_group('nccl', rank=rank, world_size=world)
        device = f'cuda:{local}'
    else:
        torch_dist.init_process_group('gloo', rank=rank, world_size=world)
        device = 'cpu'
    return rank, world, device, torch_dist.barrier


def main(argv=None):
    args = parse_args(argv)
    backend = parse_backend(args.backend, args.backend_args)
    rank, world, device, barrier = start_processes(args)
    retriever = CIRRetriever(args.config, args.checkpoint, device=device,
                             batch_size=args.batch_size)
    names, paths = gallery_files(args.gallery)
    report = retriever.update_index_folder(args.out, names, paths, dtype=args.dtype,
                                           shard_rows=args.shard_rows, rank=rank,
                                           world_size=world, barrier=barrier)
    shutdown_process_group()  # a barrier first: gloo may abort a rank that exits early
    if rank != 0:
        return report
    print(f'\n{args.out}: {report["rows"]} images; {report["encoded"] + report["reused"]} '
          f'encoded now ({report["reused"]} from an interrupted build), {report["removed"]} '
          f'removed, {len(report["failures"])} unreadable')
    if backend['type'] != 'exact':
        GalleryIndex.open(args.out, retriever.model_digest, backend)
        print(f'{backend["type"]} index ready in {args.out}')
    if args.export:
        features, table = IndexFolder(args.out).open(retriever.model_digest).export(args.export)
        print(f'exported {features} and {table}')
    if report['failures'] and not args.skip_unreadable:
        raise unreadable_gallery(report['failures'], len(paths))
    return report


if __name__ == '__main__':
    main()
