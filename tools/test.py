"""Evaluate a checkpoint: ``python tools/test.py CONFIG CHECKPOINT [options]``, or a model as
its config builds it (zero-shot baselines): ``python tools/test.py CONFIG --no-checkpoint``."""
import argparse
import logging

from mmengine.config import Config
from mmengine.logging import print_log

from ssn_plugin.cli import (add_runner_args, apply_cfg_options, apply_runner_args,
                            parse_runner_args, run_runner)
from ssn_plugin.models.clip_backbone import skip_pretrained_weights


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Evaluate an ssn_plugin checkpoint')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint file')
    parser.add_argument('--no-checkpoint', action='store_true',
                        help='evaluate the model as the config builds it, with its pretrained '
                        'CLIP weights and no checkpoint (zero-shot baselines such as '
                        'CLIPBaseline)')
    parser.add_argument('--out', help='dump the metrics to this file (.json/.yaml/.pkl)')
    parser.add_argument('--split', help='evaluate this split of the test dataset '
                        '(sets test_dataloader.dataset.split, e.g. test1)')
    parser.add_argument('--export-dir', help='write the metrics\' export files here (CIRR: the '
                        'test-server submission; sets export_dir on the test metrics)')
    parser.add_argument('--show-dir', help='write retrieval pictures of the first queries here')
    parser.add_argument('--show-num', type=int, default=8,
                        help='how many queries --show-dir draws (default 8)')
    add_runner_args(parser)
    args = parse_runner_args(parser, argv)
    if (args.checkpoint is None) == (not args.no_checkpoint):
        parser.error('give either a CHECKPOINT or --no-checkpoint' if args.checkpoint is None
                     else f'--no-checkpoint contradicts the checkpoint {args.checkpoint!r}')
    return args


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Apply the command line to the config; ``--cfg-options`` last.

    The checkpoint holds every weight, so the backbone's ``pretrained`` CLIP weights are not
    downloaded or read (``load_pretrained=False``); the architecture, activation and
    preprocessing still follow ``pretrained``. Evaluation works offline. With
    ``--no-checkpoint`` the model is evaluated as built: its ``pretrained`` weights are loaded
    and any other layer keeps its initialisation (a warning says so for models other than
    ``CLIPBaseline``).
    """
    apply_runner_args(cfg, args)
    if args.no_checkpoint:
        if cfg.model.get('type') != 'CLIPBaseline':
            print_log(f'--no-checkpoint with {cfg.model.get("type")}: its layers outside the '
                      'CLIP backbone are randomly initialised, so the numbers are not a '
                      'trained model\'s.', logger='current', level=logging.WARNING)
    else:
        cfg.load_from = args.checkpoint
        skip_pretrained_weights(cfg.get('model'))
    if args.split is not None:
        cfg.test_dataloader.dataset.split = args.split
    evaluators = cfg.get('test_evaluator') or []
    for metric in evaluators if isinstance(evaluators, list) else [evaluators]:
        if args.export_dir is not None:
            metric['export_dir'] = args.export_dir
        if args.show_dir is not None:
            metric['show_dir'] = args.show_dir
            metric['show_num'] = args.show_num
    return apply_cfg_options(cfg, args)


def main(argv=None):
    args = parse_args(argv)
    metrics = run_runner(merge_args(Config.fromfile(args.config), args), 'test')
    if args.out:
        import mmengine
        mmengine.dump(metrics, args.out)
    return metrics


if __name__ == '__main__':
    main()
