"""Serve a web page to search a gallery with a reference image and words.

    python tools/demo_app.py CONFIG CHECKPOINT --gallery DIR [--save-index FILE] [--port 7860]
    python tools/demo_app.py CONFIG CHECKPOINT --index FILE_OR_INDEX_DIR [--backend faiss]
    python tools/demo_app.py --onnx DIR --gallery DIR   # an export of tools/export_onnx.py
    python tools/demo_app.py --onnx DIR --index INDEX_DIR  # ... over an index folder

Needs the demo extra: pip install -e ".[demo]" (and ".[export]" for --onnx, which serves the
exported graphs with ONNX Runtime instead of the PyTorch model; with --onnx the page runs
without torch, open_clip or mmengine installed: README, "Export to ONNX"). The page listens
on 127.0.0.1 unless --host says otherwise, and serves only pictures it makes (thumbnails),
never files from disk. A gallery that cannot be indexed (no images, an index built by other
weights or not matching its files) still opens the page, which shows why; unreadable gallery
files are listed there.
"""
import argparse
import os.path as osp
import time

from ssn_plugin.apis import OnnxRetriever
from ssn_plugin.apis.web_demo import DemoSession, build_app
from ssn_plugin.index import parse_backend


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Composed image retrieval in the browser')
    parser.add_argument('config', nargs='?', help='model config file (not with --onnx)')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint from tools/train.py')
    parser.add_argument('--onnx', metavar='DIR',
                        help='serve an ONNX export (tools/export_onnx.py) instead of CONFIG and '
                        'CHECKPOINT; with --gallery only')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--gallery', help='folder of gallery images (searched recursively)')
    source.add_argument('--index', help='an index file written by --save-index or '
                        'tools/retrieve.py --save-index, or an index folder from '
                        'tools/build_index.py')
    parser.add_argument('--backend', default='exact', help='exact, faiss or milvus')
    parser.add_argument('--backend-args', nargs='*', default=[], metavar='KEY=VALUE',
                        help='backend arguments, e.g. factory=HNSW32')
    parser.add_argument('--save-index', help='save the gallery index to this file')
    parser.add_argument('--host', default='127.0.0.1', help='address to listen on')
    parser.add_argument('--port', type=int, default=7860)
    parser.add_argument('--page-size', type=int, default=24, help='gallery images per page')
    parser.add_argument('--device', help='cuda or cpu (default: cuda when available)')
    parser.add_argument('--batch-size', type=int, default=32)
    args = parser.parse_args(argv)
    if args.onnx:
        if args.config or args.checkpoint or args.save_index:
            parser.error('--onnx serves an export on its own: no CONFIG, CHECKPOINT or '
                         '--save-index with it')
        if args.index and not osp.isdir(args.index):
            parser.error('--onnx takes an index folder (tools/build_index.py) as --index')
    elif not (args.config and args.checkpoint):
        parser.error('CONFIG and CHECKPOINT are required (or --onnx DIR)')
    return args


def make_session(args) -> DemoSession:
    """Index the gallery (or load the index); a failure becomes the page's message, and
    gallery files that cannot be read are left out and listed on the page."""
    if getattr(args, 'onnx', None):  # sessions built from a plain Namespace have none
        retriever = OnnxRetriever(args.onnx, batch_size=args.batch_size)
    else:
        from ssn_plugin.apis import CIRRetriever  # torch and mmengine: not for --onnx
        retriever = CIRRetriever(args.config, args.checkpoint, device=args.device,
                                 batch_size=args.batch_size)
    start = time.perf_counter()
    backend = parse_backend(getattr(args, 'backend', 'exact'), getattr(args, 'backend_args', []))
    try:
        if args.index:
            retriever.load_index(args.index, backend=backend)
        else:
            retriever.index(args.gallery, skip_unreadable=True, backend=backend)
    except (ValueError, OSError) as err:
        print(f'The page will show: {err}')
        return DemoSession(None, args.page_size, error=str(err))
    print(f'Indexed {len(retriever.names)} images in {time.perf_counter() - start:.1f} s')
    notice = None
    if retriever.skipped:
        notice = (f'{len(retriever.skipped)} gallery files could not be read and are left out: '
                  + '; '.join(f'{osp.basename(p)} ({why})'
                              for p, why in sorted(retriever.skipped.items())[:10]))
        print(notice)
    if args.save_index:
        retriever.save_index(args.save_index)
        print(f'Index saved to {args.save_index}')
    return DemoSession(retriever, args.page_size, notice=notice)


def main(argv=None):
    args = parse_args(argv)
    session = make_session(args)
    app = build_app(session)
    # No allowed_paths: the page shows thumbnails it makes itself (web_demo.thumbnail), so no
    # file of the gallery's folders, nor the gallery files themselves, can be requested.
    app.launch(server_name=args.host, server_port=args.port)


if __name__ == '__main__':
    main()
