"""Command-line arguments shared by tools/train.py and tools/test.py."""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction


def add_runner_args(parser: argparse.ArgumentParser) -> None:
    """--work-dir, --cfg-options, --launcher and --local-rank."""
    parser.add_argument('--work-dir', help='the dir to save logs, checkpoints and results')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, "key=value" (e.g. train_dataloader.batch_size=32)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    parser.add_argument(
        '--image-cache', metavar='DIR',
        help='read preprocessed images from memory-mapped stores under DIR instead of decoding '
        'and resizing every time (built on first use, or by tools/build_image_cache.py)')


LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def set_image_cache(cfg: Config, root: str) -> int:
    """Set ``image_cache=root`` on the dataset of every data loader of the config.

    Returns:
        int: how many datasets were changed.
    """
    count = 0
    for name in LOADERS:
        loader = cfg.get(name)
        if isinstance(loader, dict) and isinstance(loader.get('dataset'), dict):
            loader['dataset']['image_cache'] = root
            count += 1
    return count


def parse_runner_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse, and export LOCAL_RANK for launchers that pass it as an argument."""
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def apply_runner_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Launcher, image cache and work dir (the command line's, the config's, or
    ``./work_dirs/<config name>``). Call it first in a tool's ``merge_args``;
    :func:`apply_cfg_options` goes last."""
    cfg.launcher = args.launcher
    if getattr(args, 'image_cache', None):
        set_image_cache(cfg, args.image_cache)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def follow_data_root(cfg: Config, data_root: str) -> int:
    """Point the datasets that read the config's top-level ``data_root`` at ``data_root``.

    A Python config copies ``data_root`` into its datasets when it is read, so overriding the
    variable alone would change nothing; with this, ``--cfg-options data_root=DIR`` moves
    every data loader whose dataset used it (a dataset with a root of its own keeps it).

    Returns:
        int: how many datasets were changed.
    """
    old, count = cfg.get('data_root'), 0
    for name in LOADERS:
        dataset = (cfg.get(name) or {}).get('dataset')
        if isinstance(dataset, dict) and old is not None and dataset.get('data_root') == old:
            dataset['data_root'] = data_root
            count += 1
    return count


def apply_cfg_options(cfg: Config, args: argparse.Namespace) -> Config:
    """``--cfg-options key=value``: applied after every other flag, so it has the last word
    (as in mmpretrain's tools). ``data_root=DIR`` also moves the datasets that used the
    config's ``data_root`` (:func:`follow_data_root`); a loader's own
    ``...dataset.data_root=`` in the same options still wins."""
    if args.cfg_options is not None:
        if 'data_root' in args.cfg_options:
            follow_data_root(cfg, args.cfg_options['data_root'])
        cfg.merge_from_dict(args.cfg_options)
    return cfg
