"""Check the data of a config before training: every dataset it uses, without the model.

    python tools/check_data.py CONFIG [--split train val test] [--decode] [--work-dir DIR]
        [--cfg-options data_root=DIR ...]

Builds the dataset of each chosen data loader with every check the datasets run (annotation
files, record checks, image files; with ``--decode`` every image is decoded once) and prints a
table per run: records, distinct images, gallery size, missing and unreadable images, repeated
triplets, and the captions' token lengths against the text tower's context (longer ones are
cut). The full lists (missing images, repeated triplets, captions that are cut) go to
``<work_dir>/check_data/``. For each dataset it also says how many of the images its annotation
files name are present, the fraction of a complete download. When the data root is absent it
prints the expected layout and where the data comes from.

Exit status: 0 when training and evaluation would run, 1 when they would fail (a bad file or
record, or missing/unreadable images while the dataset does not set ``skip_missing``).
"""
import argparse
import os
import os.path as osp
import statistics
import sys
from collections import Counter
from typing import Dict, List

import open_clip
from mmengine.config import Config, DictAction
from prettytable import PrettyTable

from ssn_plugin.cli import apply_cfg_options
from ssn_plugin.datasets.transforms import fiq_caption
from ssn_plugin.models.clip_backbone import load_arch_cfg
from ssn_plugin.registry import DATASETS

LOADERS = ('train', 'val', 'test')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Check the datasets of a config')
    parser.add_argument('config', help='config file')
    parser.add_argument('--split', nargs='+', default=list(LOADERS), choices=LOADERS,
                        help='which data loaders (default: all the config has)')
    parser.add_argument('--decode', action='store_true',
                        help='also decode every image once (finds truncated or broken files)')
    parser.add_argument('--work-dir', help='where check_data/ goes (default: the config\'s '
                        'work dir, else ./work_dirs/<config name>)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, "key=value" (data_root=DIR moves '
                        'the datasets)')
    return parser.parse_args(argv)


def text_tokenizer(cfg: Config):
    """The text tower's tokenizer and context length, from the architecture (no weights)."""
    arch = cfg.model.get('backbone', {}).get('arch', 'ViT-B-32')
    arch_cfg = load_arch_cfg(arch.to_dict() if hasattr(arch, 'to_dict') else arch)
    context = arch_cfg.get('text_cfg', {}).get('context_length', 77)
    return open_clip.SimpleTokenizer(context_length=context), context


def captions(item: dict) -> List[str]:
    """The texts the model reads for an item (a caption list gives each)."""
    if 'captions' in item:  # Fashion-IQ: the two captions, joined as at evaluation
        return [fiq_caption(*item['captions'])]
    text = item.get('text')
    return list(text) if isinstance(text, (list, tuple)) else [text]


def check_dataset(dataset_cfg: dict, report_dir: str, decode: bool) -> dict:
    """Build the dataset with every check, counting instead of stopping at missing images."""
    checked = dict(dataset_cfg, skip_missing=True, check_images=True, decode_images=decode,
                   report_dir=report_dir)
    checked.pop('image_cache', None)  # the files themselves are checked, not a cache
    return DATASETS.build(checked)


def summarise(dataset, name: str, tokenizer, context: int, report_dir: str) -> dict:
    items = [dataset.get_data_info(i) for i in range(len(dataset))]
    dropped = len(dataset.dropped_ids) or sum(
        m.get('dropped_queries', 0) for m in getattr(dataset, 'missing_summary', {}).values())
    keys = Counter((i.get('ref_name'), str(i.get('text', i.get('captions'))), i.get('tgt_name'))
                   for i in items)
    repeated = {k: n for k, n in keys.items() if n > 1}
    lengths, too_long = [], []
    for item in items:
        for text in captions(item):
            n = len(tokenizer.encode(text)) + 2  # start and end tokens
            lengths.append(n)
            if n > context:
                too_long.append((item.get('ref_name'), n, text))
    if repeated:
        with open(osp.join(report_dir, f'repeated_triplets_{name}.txt'), 'w') as f:
            f.writelines(f'{n}\t{ref}\t{text}\t{tgt}\n' for (ref, text, tgt), n in
                         sorted(repeated.items(), key=str))
    if too_long:
        with open(osp.join(report_dir, f'captions_cut_{name}.txt'), 'w') as f:
            f.writelines(f'{ref}\t{n}\t{text}\n' for ref, n, text in too_long)
    check = dataset.image_check
    images = {n for i in items for n in (i.get('ref_name'), i.get('tgt_name')) if n}
    return dict(
        records=len(items) + dropped, dropped=dropped,
        images=len(images | set(dataset.gallery_names)), gallery=len(dataset.gallery),
        missing=sum(c['missing'] for c in check.values()),
        unreadable=sum(c['unreadable'] for c in check.values()),
        repeated=sum(n - 1 for n in repeated.values()),
        tokens=(f'{statistics.median(lengths):g} / {max(lengths)}' if lengths else '-'),
        cut=len(too_long), check=check)


def print_download(dataset, label: str, check: Dict[str, dict]) -> None:
    """How many of the images the annotation files name are present, per group."""
    for group, counts in check.items():
        present = counts['checked'] - counts['missing'] - counts['unreadable']
        share = 100.0 * present / counts['checked'] if counts['checked'] else 100.0
        where = '' if group == dataset.split else f' {group}'
        print(f'  {label}{where}: {present} of the {counts["checked"]} images the annotation '
              f'files name are present and readable ({share:.1f}% of a complete download)')


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = apply_cfg_options(Config.fromfile(args.config), args)  # data_root=DIR moves them
    work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        './work_dirs', osp.splitext(osp.basename(args.config))[0])
    report_dir = osp.join(work_dir, 'check_data')
    os.makedirs(report_dir, exist_ok=True)
    tokenizer, context = text_tokenizer(cfg)

    table = PrettyTable(['loader', 'dataset', 'split', 'records', 'distinct images',
                         'gallery', 'missing', 'unreadable', 'repeated triplets',
                         'tokens median / max', f'cut (> {context} tokens)'])
    failures: List[str] = []
    seen: Dict[str, str] = {}
    for loader in args.split:
        dataset_cfg = (cfg.get(f'{loader}_dataloader') or {}).get('dataset')
        if not dataset_cfg:
            continue
        dataset_cfg = dataset_cfg.to_dict() if hasattr(dataset_cfg, 'to_dict') else dict(
            dataset_cfg)
        key = repr(sorted(dataset_cfg.items(), key=lambda kv: kv[0]))
        if key in seen:
            print(f'{loader}: the same dataset as {seen[key]}')
            continue
        seen[key] = loader
        cls = DATASETS.get(dataset_cfg['type'])
        label = f'{dataset_cfg["type"]} {dataset_cfg.get("split", "")}'.strip()
        root = dataset_cfg.get('data_root')
        if root is not None and not osp.isdir(root):
            failures.append(f'{loader}: data root {root} does not exist')
            print(f'{loader} ({label}): data root {root} does not exist. Expected layout:\n'
                  f'{getattr(cls, "LAYOUT", "")}\nWhere the data comes from: '
                  f'{getattr(cls, "SOURCE", "") or "see docs/data.md"}')
            continue
        try:
            dataset = check_dataset(dataset_cfg, report_dir, args.decode)
        except Exception as err:  # every dataset error names its file; report and go on
            failures.append(f'{loader} ({label}): {type(err).__name__}: {err}')
            print(f'{loader} ({label}): {type(err).__name__}: {err}')
            continue
        name = f'{getattr(cls, "REPORT_NAME", "data")}_{dataset.split}'
        row = summarise(dataset, name, tokenizer, context, report_dir)
        table.add_row([loader, dataset_cfg['type'], dataset.split, row['records'],
                       row['images'], row['gallery'], row['missing'], row['unreadable'],
                       row['repeated'], row['tokens'], row['cut']])
        print_download(dataset, label, row['check'])
        bad = row['missing'] + row['unreadable']
        if bad and not dataset_cfg.get('skip_missing', False):
            failures.append(
                f'{loader} ({label}): {bad} images are missing or unreadable and the dataset '
                f'does not set skip_missing; the list is in '
                f'{osp.join(report_dir, f"missing_images_{name}.txt")}')
        elif bad:
            print(f'  {loader}: skip_missing=True drops {row["dropped"]} records with a '
                  'missing image')
    print(table.get_string())
    print(f'Full lists: {report_dir}')
    if not args.decode:
        print('Images were checked for existence only; --decode also reads every file.')
    for failure in failures:
        print(f'FAIL {failure}')
    print('Training and evaluation would fail.' if failures else
          'Training and evaluation would run on this data.')
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
