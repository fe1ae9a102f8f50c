"""Query a gallery of your own images with a trained SSN.

    python tools/retrieve.py CONFIG CHECKPOINT --gallery DIR --image REF.png \
        --text "make it red and remove the dog" [--topk 10] [--save-index idx.pth] [--out grid.png]
    python tools/retrieve.py CONFIG CHECKPOINT --index idx.pth --image REF.png --text "..."
    python tools/retrieve.py CONFIG CHECKPOINT --index INDEX_DIR [--backend faiss] ...

An index folder comes from tools/build_index.py; ``--backend`` (exact, faiss, milvus) and
``--backend-args KEY=VALUE`` choose how it is searched.
"""
import argparse

from prettytable import PrettyTable

from ssn_plugin.apis import CIRRetriever, draw_retrieval_grid
from ssn_plugin.index import parse_backend


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Composed image retrieval on your own images')
    parser.add_argument('config', help='model config file')
    parser.add_argument('checkpoint', help='checkpoint from tools/train.py')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--gallery', help='folder of gallery images (searched recursively)')
    source.add_argument('--index', help='an index file written by --save-index, or an index '
                        'folder from tools/build_index.py')
    parser.add_argument('--image', required=True, help='the reference image')
    parser.add_argument('--text', required=True, help='how the target differs from it')
    parser.add_argument('--topk', type=int, default=10, help='results to show')
    parser.add_argument('--save-index', help='save the gallery index to this file')
    parser.add_argument('--out', help='write the retrieval picture (PNG) here')
    parser.add_argument('--backend', default='exact', help='exact, faiss or milvus')
    parser.add_argument('--backend-args', nargs='*', default=[], metavar='KEY=VALUE',
                        help='backend arguments, e.g. factory=HNSW32')
    parser.add_argument('--device', help='cuda or cpu (default: cuda when available)')
    parser.add_argument('--batch-size', type=int, default=32)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    retriever = CIRRetriever(args.config, args.checkpoint, device=args.device,
                             batch_size=args.batch_size)
    backend = parse_backend(args.backend, args.backend_args)
    if args.index:
        retriever.load_index(args.index, backend=backend)
    else:
        retriever.index(args.gallery, backend=backend)
    if args.save_index:
        retriever.save_index(args.save_index)
    results = retriever.query(args.image, args.text, topk=args.topk)
    table = PrettyTable(['rank', 'image', 'score'])
    for rank, (name, score) in enumerate(results, 1):
        table.add_row([rank, name, f'{score:.4f}'])
    print(f'Query: {args.image} + "{args.text}" against {len(retriever.names)} images')
    print(table)
    if args.out:
        grid = draw_retrieval_grid(args.image, args.text,
                                   [(retriever.path_of(n), n, s) for n, s in results])
        grid.save(args.out)
        print(f'picture written to {args.out}')
    return results


if __name__ == '__main__':
    main()
