"""Serving latency: the exported graphs in ONNX Runtime against the same model in PyTorch.

    python benchmarks/bench_export.py                  # ViT-B/32 recipe shapes, random init, CPU
    python benchmarks/bench_export.py --device cuda    # on a GPU (CUDA execution provider)
    python benchmarks/bench_export.py --quick          # one line: ort_vs_torch_query=<ratio>

Both sides get the same inputs: normalised images [N, 3, 224, 224] and the token ids of one
caption per image. PyTorch runs ``gallery_features`` / ``query_features_from_tokens`` in eval
mode under ``torch.no_grad`` (fp32 on CPU; fp16 autocast on CUDA); ONNX Runtime runs the fp32
graphs that ``tools/export_onnx.py`` writes. Reported: the median of ``--repeats`` timed runs
after 2 warm-up runs, per image (gallery) and per query, at batch 1 and 16, and the ratio
PyTorch time / ONNX Runtime time (above 1: ONNX Runtime is faster).
"""
import argparse
import os
import platform
import statistics
import tempfile
import time

import torch
from mmengine.config import Config

from ssn_plugin.apis.onnx_export import export_onnx
from ssn_plugin.models.clip_backbone import skip_pretrained_weights
from ssn_plugin.registry import MODELS

CONFIG = os.path.join(os.path.dirname(__file__), '..', 'configs', 'cirr', 'ssn.py')
CAPTION = 'remove the dog and make the sky darker'


def median_seconds(fn, repeats: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--batches', type=int, nargs='+', default=[1, 16])
    parser.add_argument('--quick', action='store_true')
    args = parser.parse_args()
    import onnxruntime as ort

    cfg = Config.fromfile(CONFIG).model
    skip_pretrained_weights(cfg)
    torch.manual_seed(0)
    model = MODELS.build(cfg).eval()
    out = tempfile.mkdtemp(prefix='bench_export_')
    export_onnx(model, out)
    providers = (['CUDAExecutionProvider', 'CPUExecutionProvider'] if args.device == 'cuda'
                 else ['CPUExecutionProvider'])
    sessions = {name: ort.InferenceSession(os.path.join(out, f'{name}.onnx'),
                                           providers=providers)
                for name in ('gallery_encoder', 'query_composer')}
    model.to(args.device)
    height, width = model.image_size
    batches = [1] if args.quick else args.batches
    rows = []
    for batch in batches:
        images = torch.randn(batch, 3, height, width)
        tokens = model.clip.tokenize([CAPTION] * batch)[0].to(torch.int64)
        dev_images, dev_tokens = images.to(args.device), tokens.to(args.device)
        autocast = torch.autocast('cuda', dtype=torch.float16, enabled=args.device == 'cuda')

        def torch_gallery():
            with torch.no_grad(), autocast:
                model.gallery_features(dev_images)
            if args.device == 'cuda':
                torch.cuda.synchronize()

        def torch_query():
            with torch.no_grad(), autocast:
                model.query_features_from_tokens(dev_images, dev_tokens)
            if args.device == 'cuda':
                torch.cuda.synchronize()

        feeds = {'gallery_encoder': {'image': images.numpy()},
                 'query_composer': {'image': images.numpy(), 'text_tokens': tokens.numpy()}}
        for name, torch_fn in (('gallery_encoder', torch_gallery),
                               ('query_composer', torch_query)):
            if args.quick and name == 'gallery_encoder':
                continue
            t_torch = median_seconds(torch_fn, args.repeats) / batch
            t_ort = median_seconds(lambda: sessions[name].run(None, feeds[name]),
                                   args.repeats) / batch
            rows.append((name, batch, t_torch, t_ort))
    if args.quick:
        print(f'ort_vs_torch_query={rows[0][2] / rows[0][3]:.2f}')
        return
    print(f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch '
          f'{torch.__version__}, onnxruntime {ort.__version__}, device {args.device}, '
          f'ViT-B/32 recipe shapes, random init')
    print('graph            batch  torch ms/item  onnxruntime ms/item  torch/ort')
    for name, batch, t_torch, t_ort in rows:
        print(f'{name:<16} {batch:>5}  {1000 * t_torch:>13.1f}  {1000 * t_ort:>19.1f}  '
              f'{t_torch / t_ort:>9.2f}')


if __name__ == '__main__':
    main()
