"""Export a trained model's serving graphs to ONNX, checked against PyTorch.

    python tools/export_onnx.py CONFIG CHECKPOINT --out DIR [--opset 17]

Writes ``DIR/gallery_encoder.onnx`` (image -> gallery feature), ``DIR/query_composer.onnx``
(image + text tokens -> query) and ``DIR/export.json`` (image size, pixel mean/std, tokenizer,
context length, feature width, project version, the checkpoint's SHA-256). Each graph is run in
ONNX Runtime on fresh inputs and compared with PyTorch before it is written; one that differs by
more than 1e-4 is refused. Needs the ``[export]`` extra (onnx, onnxruntime). Nothing is
downloaded: the checkpoint holds every weight, and one of another architecture is refused with
the tensors that differ.
"""
import argparse
import json

from ssn_plugin.apis import CIRRetriever
from ssn_plugin.apis.onnx_export import EXPORT_TOLERANCE, export_onnx


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Export the serving graphs to ONNX')
    parser.add_argument('config', help='model config file')
    parser.add_argument('checkpoint', help='checkpoint from tools/train.py')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--opset', type=int, default=17, help='ONNX opset (default 17)')
    parser.add_argument('--tolerance', type=float, default=EXPORT_TOLERANCE,
                        help='largest difference from PyTorch allowed (default 1e-4)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    model = CIRRetriever(args.config, args.checkpoint, device='cpu').model
    written = export_onnx(model, args.out, checkpoint=args.checkpoint, opset=args.opset,
                          tolerance=args.tolerance)
    with open(written['meta']) as f:
        meta = json.load(f)
    for name, path in written.items():
        print(f'{name}: {path}')
    print(f'largest difference from PyTorch: {meta["max_abs_difference"]}')


if __name__ == '__main__':
    main()
