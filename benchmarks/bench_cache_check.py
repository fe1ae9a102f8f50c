"""What the image cache's content check costs per image, against what the cache saves.

Per image, on one core, page cache warm (the files were just written): the size + mtime check
(``verify='stamp'``), the BLAKE2b digest of the file (``verify='content'``, the default), and
the decode + resize the cache replaces (``LoadCIRImages`` + ``CLIPResizeCrop(224)``), on
generated photo-like PNGs of CIRR-like size (500-1024 px, benchmarks/bench_data.py's
generator). Ends with the pinned line ``digest_vs_decode=<ratio>`` (how many digests one
decode costs).

    python benchmarks/bench_cache_check.py --quick    # 24 images, a few seconds
    python benchmarks/bench_cache_check.py            # 96 images
"""
import argparse
import os
import platform
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_data import write_photos  # noqa: E402
from ssn_plugin.datasets import CLIPResizeCrop, LoadCIRImages  # noqa: E402
from ssn_plugin.datasets.image_cache import file_digest  # noqa: E402
from ssn_plugin.image_io import file_stamp  # noqa: E402


def per_image(fn, paths, repeats: int) -> float:
    """Median over ``repeats`` passes of the seconds per image."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for path in paths:
            fn(path)
        times.append((time.perf_counter() - start) / len(paths))
    return sorted(times)[len(times) // 2]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    count = 24 if args.quick else 96
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_photos(tmp, count)
        kb = sum(os.path.getsize(p) for p in paths) / len(paths) / 1024
        load, resize = LoadCIRImages(keys=('img', )), CLIPResizeCrop(224, keys=('img', ))
        decode = per_image(lambda p: resize(load(dict(img_path=p))), paths, 3)
        digest = per_image(file_digest, paths, 5)
        stamp = per_image(file_stamp, paths, 5)
    print(f'# {time.strftime("%Y-%m-%d")} {platform.node()} {platform.processor() or "cpu"}, '
          f'torch {torch.__version__}, 1 thread, {count} photo-like PNGs of {kb:.0f} KB')
    print('| check | ms per image | images/s |')
    print('|---|---:|---:|')
    for name, seconds in (('size + mtime (verify=stamp)', stamp),
                          ('BLAKE2b of the file (verify=content)', digest),
                          ('decode + resize to 224 (what the cache saves)', decode)):
        print(f'| {name} | {1000 * seconds:.3f} | {1 / seconds:,.0f} |')
    print(f'digest_vs_decode={decode / digest:.1f}')


if __name__ == '__main__':
    main()
