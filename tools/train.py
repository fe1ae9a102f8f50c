"""Train a model from a config: ``python tools/train.py CONFIG [options]``."""
import argparse

from mmengine.config import Config

from ssn_plugin.cli import (add_runner_args, apply_cfg_options, apply_runner_args,
                            parse_runner_args, run_runner)
from ssn_plugin.engine.hooks.safe_checkpoint_loader_hook import RESUME_OR_START


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train an ssn_plugin model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from CKPT; without a value, from the checkpoint the work dir\'s '
        'last_checkpoint names (an error when there is none)')
    parser.add_argument(
        '--resume-or-start', action='store_true',
        help='resume from the work dir\'s latest checkpoint if there is one, else start a '
        'fresh run (for jobs that a scheduler restarts)')
    parser.add_argument('--amp', action='store_true',
                        help='mixed-precision training (needs a GPU)')
    parser.add_argument('--no-validate', action='store_true',
                        help='do not evaluate during training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr with the total batch size (auto_scale_lr in the config)')
    add_runner_args(parser)
    return parse_runner_args(parser, argv)


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Apply the command line to the config; nothing else is changed. ``--cfg-options`` is
    applied last."""
    apply_runner_args(cfg, args)
    if args.amp:
        optim_wrapper = cfg.optim_wrapper
        if optim_wrapper.get('type', 'OptimWrapper') == 'OptimWrapper':
            optim_wrapper.type = 'AmpOptimWrapper'
            optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.resume_or_start:
        if args.resume is not None:
            raise ValueError('--resume and --resume-or-start exclude each other')
        cfg.resume = RESUME_OR_START
        cfg.load_from = None
    elif args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None
    if args.auto_scale_lr:
        if not isinstance(cfg.get('auto_scale_lr'), dict) or 'base_batch_size' not in \
                cfg.auto_scale_lr:
            raise ValueError(
                f'--auto-scale-lr needs `auto_scale_lr = dict(base_batch_size=N)` in '
                f'{args.config}: the global batch size its learning rates were set for')
        cfg.auto_scale_lr.enable = True
    return apply_cfg_options(cfg, args)


def main(argv=None):
    args = parse_args(argv)
    run_runner(merge_args(Config.fromfile(args.config), args), 'train')


if __name__ == '__main__':
    main()
