"""Data loading and the frozen image tower: the caches against the uncached paths, in one run.

1. Loader throughput, images/s on one core (one thread): the PNG path (``LoadCIRImages`` +
   ``CLIPResizeCrop(224)`` + ``PackCIRInputs``) against the image cache (``CachedCIRImages``
   + ``PackCIRInputs``, memory-mapped store, page cache warm) on generated photo-like PNGs of
   CIRR-like size (500-1024 px) and on the shapes demo's 64 px images. The cache's build rate
   (all cores) is reported too.
2. A Fashion-IQ-recipe training step with the image tower frozen (forward, backward, AdamW) on a
   ViT-B-32-shaped random-init SSN: feature cache off against on (in the steady state after the
   first epoch: every image already cached).
3. Without ``--quick``: wall time of short training runs (tools/train.py), image cache off
   against on: the demo config (1 epoch) and a tiny-backbone CIRR config on photo-like PNGs.

    python benchmarks/bench_data.py --quick     # about half a minute on 2 cores
    python benchmarks/bench_data.py             # + the training runs
    python benchmarks/bench_data.py --quick --device cuda --amp --batch 128   # on a GPU

It generates its own data in a temporary folder and ends with the two pinned lines
``loader_cache_vs_png=<ratio>`` and ``frozen_step_cache_vs_none=<ratio>``.
"""
import argparse
import json
import os
import os.path as osp
import platform
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from mmengine.dataset import Compose
from mmengine.structures import BaseDataElement
from PIL import Image

import ssn_plugin.models  # noqa: F401
from ssn_plugin.datasets import CLIPResizeCrop, LoadCIRImages, PackCIRInputs
from ssn_plugin.datasets.image_cache import CachedCIRImages
from ssn_plugin.datasets.shapes import generate_shapes_dataset
from ssn_plugin.registry import MODELS

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CAPTION = 'is darker and has longer sleeves and a print'


# ---------------------------------------------------------------------- data
def photo_like(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Smooth colour fields plus sensor-like noise: compresses in PNG about as a photo does."""
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC),
                      dtype=np.int16)
    noise = rng.normal(0, 3, (height, width, 3)).astype(np.int16)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def write_photos(folder: str, count: int, seed: int = 0) -> list:
    """``count`` photo-like PNGs, each side 500-1024 px (CIRR's images are of that size)."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(count):
        width, height = (int(v) for v in rng.integers(500, 1025, 2))
        path = osp.join(folder, f'photo_{i:05d}.png')
        photo_like(rng, width, height).save(path)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------- 1. loader
def rate(pipeline, paths, min_seconds: float) -> float:
    """Images/s of ``pipeline`` on ``paths`` in this thread, repeated for ``min_seconds``."""
    done, start = 0, time.perf_counter()
    while True:
        for path in paths:
            pipeline(dict(img_path=path, sample_idx=done))
            done += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return done / elapsed


def bench_loader(paths, cache_root: str, size: int, min_seconds: float) -> dict:
    png = Compose([LoadCIRImages(keys=('img', )), CLIPResizeCrop(size, keys=('img', )),
                   PackCIRInputs(keys=('img', ), meta_keys=())])
    cached = CachedCIRImages([LoadCIRImages(), CLIPResizeCrop(size)], cache_root,
                             keys=('img', ), name='bench')
    start = time.perf_counter()
    cached.prepare(paths, workers=os.cpu_count(), progress=False)
    build = len(paths) / (time.perf_counter() - start)
    from_cache = Compose([cached, PackCIRInputs(keys=('img', ), meta_keys=())])
    # Same tensors both ways.
    assert torch.equal(png(dict(img_path=paths[0]))['inputs']['img'],
                       from_cache(dict(img_path=paths[0]))['inputs']['img'])
    png_rate = rate(png, paths, min_seconds)
    cache_rate = rate(from_cache, paths, min_seconds)
    # The store alone (what another storage library could speed up) vs the packing after it.
    raw_rate = rate(lambda r: cached.store.get(r['img_path']), paths, min_seconds / 2)
    return dict(png=png_rate, cache=cache_rate, ratio=cache_rate / png_rate, build=build,
                raw=raw_rate, mean_kb=sum(osp.getsize(p) for p in paths) / len(paths) / 1024)


# ---------------------------------------------------------------------- 2. frozen step
def frozen_step_seconds(feature_cache: bool, batch: int, steps: int, device: str = 'cpu',
                        amp: bool = False) -> float:
    """Seconds per training step of a ViT-B-32-shaped SSN whose image tower is frozen (bf16
    autocast with ``amp``)."""
    torch.manual_seed(0)
    model = MODELS.build(dict(type='SSN', backbone=dict(
        type='OpenCLIPBackbone', arch='ViT-B-32', pretrained=None,
        feature_cache=feature_cache))).to(device)
    model.train()
    model.clip.set_trainable(vision=False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    inputs = dict(ref_img=torch.randn(batch, 3, 224, 224, device=device),
                  tgt_img=torch.randn(batch, 3, 224, 224, device=device))
    samples = [BaseDataElement(text=CAPTION, ref_img_path=f'ref{i}', tgt_img_path=f'tgt{i}')
               for i in range(batch)]

    def step():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
            losses = model.loss(inputs, samples)
        optimizer.zero_grad()
        sum(v for k, v in losses.items() if 'loss' in k).backward()
        optimizer.step()

    def sync():
        if device.startswith('cuda'):
            torch.cuda.synchronize()

    step()  # warm-up; with the cache, this is the first epoch's visit of the images
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - start) / steps


# ---------------------------------------------------------------------- 3. training runs
def train_seconds(config: str, work_dir: str, extra: list) -> float:
    """Wall time of tools/train.py from its first to its last log line (start-up excluded)."""
    out = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'train.py'), config,
                          '--work-dir', work_dir, *extra], capture_output=True, text=True,
                         cwd=ROOT)
    if out.returncode:
        raise RuntimeError(out.stdout[-3000:] + out.stderr[-3000:])
    stamps = re.findall(r'^(\d\d/\d\d \d\d:\d\d:\d\d) - mmengine', out.stdout, re.M)
    first, last = (time.mktime(time.strptime('2026/' + s, '%Y/%m/%d %H:%M:%S'))
                   for s in (stamps[0], stamps[-1]))
    return last - first


def tiny_cirr_config(folder: str, data_root: str) -> str:
    """The CIRR recipe with a 1-layer 224 px backbone: data loading dominates its step."""
    arch = dict(embed_dim=64, vision_cfg=dict(image_size=224, layers=1, width=64, patch_size=32,
                                              head_width=32),
                text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=1))
    arch_file = osp.join(folder, 'tiny_clip_224.json')
    with open(arch_file, 'w') as f:
        json.dump(arch, f)
    path = osp.join(folder, 'tiny_cirr.py')
    with open(path, 'w') as f:
        f.write(f"""
_base_ = [{osp.join(ROOT, 'configs', 'cirr', 'ssn.py')!r}]
model = dict(backbone=dict(arch={arch_file!r}, pretrained=None),
             fusion=dict(num_heads=2, ffn_dim=64))
optim_wrapper = dict(type='OptimWrapper')
train_dataloader = dict(batch_size=16, num_workers=1, dataset=dict(data_root={data_root!r}))
val_dataloader = dict(batch_size=16, num_workers=1, dataset=dict(data_root={data_root!r}))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=2)
""")
    return path


def make_photo_cirr(root: str, num_images: int, num_triplets: int) -> None:
    """A CIRR-layout dataset (train and val) of photo-like PNGs."""
    rng = np.random.default_rng(1)
    for split, prefix, folder in (('train', 'train', osp.join(root, 'images')),
                                  ('val', 'dev', root)):
        names = [f'{prefix}-{i}-0-img0' for i in range(num_images)]
        rels = {n: f'./{prefix}/{n}.png' for n in names}
        for name in names:
            os.makedirs(osp.join(folder, prefix), exist_ok=True)
            width, height = (int(v) for v in rng.integers(500, 1025, 2))
            photo_like(rng, width, height).save(osp.join(folder, rels[name]))
        records = []
        for k in range(num_triplets):
            members = [names[int(j)] for j in rng.choice(num_images, 6, replace=False)]
            records.append(dict(pairid=k + (10**6 if split == 'val' else 0),
                                reference=members[0], target_hard=members[1],
                                caption='make it brighter',
                                img_set=dict(id=k, members=members)))
        for sub, name, content in (('captions', f'cap.rc2.{split}.json', records),
                                   ('image_splits', f'split.rc2.{split}.json', rels)):
            os.makedirs(osp.join(root, 'cirr', sub), exist_ok=True)
            with open(osp.join(root, 'cirr', sub, name), 'w') as f:
                json.dump(content, f)


def bench_training(tmp: str):
    """Yield (name, seconds without the cache, seconds of the first run with it (which builds
    it), seconds of a later run with it) per training set-up."""
    demo = osp.join(ROOT, 'configs', 'demo', 'ssn_shapes.py')
    demo_root = osp.join(tmp, 'shapes')
    cirr_root = osp.join(tmp, 'photo_cirr')
    make_photo_cirr(cirr_root, num_images=160, num_triplets=320)
    cirr = tiny_cirr_config(tmp, cirr_root)
    setups = [(f'demo, 1 epoch + validation, {workers} loader workers', demo,
               ['--cfg-options', f'train_dataloader.dataset.data_root={demo_root}',
                f'val_dataloader.dataset.data_root={demo_root}',
                f'test_dataloader.dataset.data_root={demo_root}', 'train_cfg.max_epochs=1',
                'train_cfg.val_interval=1', f'train_dataloader.num_workers={workers}',
                f'val_dataloader.num_workers={workers}',
                f'train_dataloader.persistent_workers={workers > 0}',
                f'val_dataloader.persistent_workers={workers > 0}'])
              for workers in (0, 2)]
    setups.append(('tiny-backbone CIRR, 224 px photo-like PNGs, 2 epochs + validation, '
                   '1 loader worker', cirr, []))
    for i, (name, config, extra) in enumerate(setups):
        off = train_seconds(config, osp.join(tmp, 'w_off'), extra)
        cache = osp.join(tmp, f'cache_{i}')
        on_first = train_seconds(config, osp.join(tmp, 'w_on1'), extra + ['--image-cache', cache])
        on = train_seconds(config, osp.join(tmp, 'w_on2'), extra + ['--image-cache', cache])
        yield name, off, on_first, on


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='loader and frozen step only')
    parser.add_argument('--photos', type=int, help='photo-like PNGs (default 24 / 96)')
    parser.add_argument('--batch', type=int, default=16, help='frozen-step batch')
    parser.add_argument('--steps', type=int, help='timed frozen steps (default 2 / 5)')
    parser.add_argument('--device', default='cpu', help='device of the frozen-step part '
                        '(e.g. cuda; the loader parts always run on the CPU)')
    parser.add_argument('--amp', action='store_true', help='bf16 autocast in the frozen step')
    args = parser.parse_args()
    photos = args.photos or (24 if args.quick else 96)
    steps = args.steps or (2 if args.quick else 5)
    min_seconds = 2.0 if args.quick else 5.0
    torch.set_num_threads(os.cpu_count() or 1)
    print(f'# {time.strftime("%Y-%m-%d")}, {platform.machine()}, {os.cpu_count()} cores, '
          f'torch {torch.__version__}; loader rates on one thread')
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_photos(osp.join(tmp, 'photos'), photos)
        photo = bench_loader(paths, osp.join(tmp, 'cache'), 224, min_seconds)
        print(f'photo-like PNGs ({photos}, 500-1024 px, {photo["mean_kb"]:.0f} KB on average) '
              f'-> 224 px: PNG path {photo["png"]:.1f} images/s, cache {photo["cache"]:.0f} '
              f'images/s ({photo["ratio"]:.0f}x; the store read alone {photo["raw"]:.0f} '
              f'images/s); cache build {photo["build"]:.1f} images/s on {os.cpu_count()} '
              'threads', flush=True)
        generate_shapes_dataset(osp.join(tmp, 'shapes'), num_train_sets=2 if args.quick else 3000,
                                num_val_sets=20 if args.quick else 500)
        demo_paths = sorted(osp.join(tmp, 'shapes', 'dev', f)
                            for f in os.listdir(osp.join(tmp, 'shapes', 'dev')))[:120]
        demo = bench_loader(demo_paths, osp.join(tmp, 'cache_demo'), 64, min_seconds)
        print(f'demo images ({len(demo_paths)}, 64 px): PNG path {demo["png"]:.0f} images/s, '
              f'cache {demo["cache"]:.0f} images/s ({demo["ratio"]:.1f}x)', flush=True)
        off = frozen_step_seconds(False, args.batch, steps, args.device, args.amp)
        on = frozen_step_seconds(True, args.batch, steps, args.device, args.amp)
        precision = 'bf16 autocast' if args.amp else 'fp32'
        print(f'frozen image tower, ViT-B-32-shaped SSN, batch {args.batch}, {precision}, '
              f'{args.device}: '
              f'{off:.2f} s/step without the feature cache, {on:.2f} s/step with it',
              flush=True)
        if not args.quick:
            for name, t_off, t_first, t_on in bench_training(tmp):
                print(f'training, {name}: cache off {t_off:.0f} s, cache on {t_on:.0f} s '
                      f'({t_off / t_on:.2f}x; the first run with the cache, which builds it: '
                      f'{t_first:.0f} s)', flush=True)
    print(f'loader_cache_vs_png={photo["ratio"]:.1f}')
    print(f'frozen_step_cache_vs_none={off / on:.2f}')


if __name__ == '__main__':
    main()
