"""Build the image caches of a config's datasets before training or testing.

    python tools/build_image_cache.py CONFIG --image-cache data/cache [--loaders train val]
        [--workers 16] [--cfg-options ...]

Each split's images go once through the deterministic head of its pipelines (decode, pad,
resize to the model's input size) into a memory-mapped store under the cache folder, in
parallel, with a progress bar; an interrupted build resumes. Then train or test with the same
``--image-cache`` (or ``image_cache=`` in the dataset configs). Nothing is downloaded: the image
size comes from the model's architecture.
"""
import argparse

import torch
from mmengine.config import Config, DictAction

from ssn_plugin.cli import set_image_cache
from ssn_plugin.models.clip_backbone import skip_pretrained_weights
from ssn_plugin.registry import DATASETS, MODELS


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Build the image caches of a config')
    parser.add_argument('config', help='config file')
    parser.add_argument('--image-cache', metavar='DIR',
                        help='cache folder (default: the datasets\' image_cache in the config)')
    parser.add_argument('--loaders', nargs='+', default=['train', 'val', 'test'],
                        choices=['train', 'val', 'test'], help='which data loaders')
    parser.add_argument('--workers', type=int, help='threads (default: up to 16 cores)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, "key=value"')
    return parser.parse_args(argv)


def model_image_size(model_cfg) -> tuple:
    """The model's input size, from its architecture (built on the meta device, no weights)."""
    model_cfg = Config(dict(model=model_cfg)).model  # a copy
    skip_pretrained_weights(model_cfg)
    with torch.device('meta'):
        return tuple(MODELS.build(model_cfg).image_size)


def build_caches(cfg: Config, loaders, workers=None) -> list:
    """Build (or check) the cache of every chosen loader's dataset; returns the stores."""
    size = model_image_size(cfg.model)
    stores = {}  # directory -> store: val and test often share theirs
    for name in loaders:
        loader = cfg.get(f'{name}_dataloader')
        if not loader or not loader.get('dataset', {}).get('image_cache'):
            continue
        dataset = DATASETS.build(loader['dataset'])
        dataset.prepare_for_model(size, build_caches=True, workers=workers)
        stores.update((t.directory, t.store) for t in dataset.cached_image_transforms())
    if not stores:
        raise ValueError(f'no data loader of {cfg.filename} has an image cache: pass '
                         '--image-cache DIR or set image_cache in the dataset configs')
    return list(stores.values())


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.image_cache:
        set_image_cache(cfg, args.image_cache)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    for store in build_caches(cfg, args.loaders, args.workers):
        count, height, width, _ = store.images.shape
        print(f'{store.directory}: {count} images of {height}x{width}, '
              f'{store.images.nbytes / 2**20:.1f} MiB')


if __name__ == '__main__':
    main()
