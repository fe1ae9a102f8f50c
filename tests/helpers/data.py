"""Test data helpers: tiny open_clip configs, generated stand-in images, tiny CIRR, Fashion-IQ
and CIRCO datasets, the pipelines of the tiny model."""
import csv
import json
import os
import os.path as osp
import random

import numpy as np
import pytest
from PIL import Image

PROJECT_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# SSN_SHARED_DATA points elsewhere when the tests run from a copy of the tree (mutation tests).
SHARED_DATA = os.environ.get('SSN_SHARED_DATA', osp.join(PROJECT_ROOT, '..', 'shared', 'data'))

# A 1-layer ViT / text transformer: 32 px images, 8 px patches -> 17 image tokens.
TINY_CLIP = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=32, layers=1, width=64, patch_size=8, head_width=32),
    text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1),
)


def shared_data(*parts: str) -> str:
    """Path under ../shared/data, skipping the test when the folder is absent."""
    path = osp.join(SHARED_DATA, *parts)
    if not osp.exists(path):
        pytest.skip(f'the shared annotation files are not available at {SHARED_DATA}')
    return path


def tiny_ssn_cfg(arch, **kwargs) -> dict:
    cfg = dict(
        type='SSN',
        backbone=dict(type='OpenCLIPBackbone', arch=arch, pretrained=None),
        fusion=dict(type='SSNFusion', num_heads=2, ffn_dim=64),
    )
    cfg.update(kwargs)
    return cfg


def write_image(path: str, size=(40, 30), color=None, seed=0) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    if color is None:
        array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    else:
        array = np.empty((size[1], size[0], 3), dtype=np.uint8)
        array[:] = color
    Image.fromarray(array).save(path)


def write_standin_images(root: str, name_to_rel: dict, img_root: str = None,
                         size=(8, 8)) -> None:
    """One small PNG per split-file entry, at the path the split file names."""
    img_root = root if img_root is None else img_root
    for i, (name, rel) in enumerate(name_to_rel.items()):
        write_image(osp.join(img_root, rel), size=size, seed=i)


def make_tiny_cirr(root: str, num_images: int = 24, num_train: int = 24, num_val: int = 12,
                   seed: int = 0) -> dict:
    """A CIRR-format dataset with train and val splits (val schema), random images."""
    rng = random.Random(seed)
    info = {}
    for split, prefix, folder, count in (('train', 'train', 'images', num_train),
                                         ('val', 'dev', '', num_val)):
        names = [f'{prefix}-{i}-0-img{i % 2}' for i in range(num_images)]
        if split == 'train':
            rels = {n: f'./train/{i % 3}/{n}.png' for i, n in enumerate(names)}
        else:
            rels = {n: f'./dev/{n}.png' for n in names}
        records = []
        for k in range(count):
            members = rng.sample(names, 6)
            ref, tgt = members[0], members[1]
            rng.shuffle(members)
            records.append(dict(
                pairid=1000 * (split == 'val') + k, reference=ref, target_hard=tgt,
                target_soft={tgt: 1.0}, caption=rng.choice(
                    ['make it red', 'remove the dog', 'add two cats on the left', 'same']),
                img_set=dict(id=k, members=members, reference_rank=0, target_rank=1)))
        os.makedirs(osp.join(root, 'cirr', 'captions'), exist_ok=True)
        os.makedirs(osp.join(root, 'cirr', 'image_splits'), exist_ok=True)
        with open(osp.join(root, 'cirr', 'captions', f'cap.rc2.{split}.json'), 'w') as f:
            json.dump(records, f)
        with open(osp.join(root, 'cirr', 'image_splits', f'split.rc2.{split}.json'), 'w') as f:
            json.dump(rels, f)
        img_root = osp.join(root, folder) if folder else root
        for i, (name, rel) in enumerate(rels.items()):
            write_image(osp.join(img_root, rel), seed=seed * 1000 + i)
        info[split] = dict(records=records, rels=rels)
    return info


def cirr_as_triplets(root: str, info: dict, split: str = 'val', fmt: str = 'jsonl') -> dict:
    """Write the ``split`` of a :func:`make_tiny_cirr` dataset at ``root`` in the own-triplets
    layout, next to it: ``<split>.jsonl`` (or ``.csv``) and ``gallery.txt`` (the split-file
    images no record names), paths relative to ``root`` (``img_prefix='.'``) so both layouts
    read the same files. Returns the CustomCIRDataset arguments."""
    rels = {name: osp.normpath(rel) for name, rel in info[split]['rels'].items()}
    if split == 'train':
        rels = {name: osp.join('images', rel) for name, rel in rels.items()}
    rows = [dict(id=str(r['pairid']), reference=rels[r['reference']], caption=r['caption'],
                 target=rels[r['target_hard']]) for r in info[split]['records']]
    ann_file = f'{split}.{fmt}'
    with open(osp.join(root, ann_file), 'w', newline='') as f:
        if fmt == 'jsonl':
            f.writelines(json.dumps(row) + '\n' for row in rows)
        else:
            writer = csv.DictWriter(f, fieldnames=['id', 'reference', 'caption', 'target'])
            writer.writeheader()
            writer.writerows(rows)
    named = {n for row in rows for n in (row['reference'], row['target'])}
    with open(osp.join(root, 'gallery.txt'), 'w') as f:
        f.writelines(f'{rel}\n' for rel in rels.values() if rel not in named)
    return dict(data_root=root, split=split, ann_file=ann_file, img_prefix='.')


def write_triplets(root: str, rows, split: str = 'val', images: bool = True) -> str:
    """``<root>/<split>.jsonl`` from ``rows`` (dicts, or raw strings written as they are), and
    an image under ``images/`` for every path a dict row names. Returns the file's path."""
    path = osp.join(root, f'{split}.jsonl')
    os.makedirs(root, exist_ok=True)
    with open(path, 'w') as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + '\n')
    if images:
        names = {row[k] for row in rows if isinstance(row, dict)
                 for k in ('reference', 'target') if isinstance(row.get(k), str)}
        for i, name in enumerate(sorted(names)):
            if not osp.isabs(name) and not name.startswith('..'):
                write_image(osp.join(root, 'images', name), size=(8, 8), seed=i)
    return path


QUERY_PIPELINE = [
    dict(type='LoadCIRImages', keys=('ref_img', )),
    dict(type='CLIPResizeCrop', size=32, keys=('ref_img', )),
    dict(type='PackCIRInputs', keys=('ref_img', )),
]
GALLERY_PIPELINE = [
    dict(type='LoadCIRImages', keys=('img', )),
    dict(type='CLIPResizeCrop', size=32, keys=('img', )),
    dict(type='PackCIRInputs', keys=('img', )),
]
TRAIN_PIPELINE = [
    dict(type='LoadCIRImages', keys=('ref_img', 'tgt_img')),
    dict(type='CLIPResizeCrop', size=32, keys=('ref_img', 'tgt_img')),
    dict(type='PackCIRInputs', keys=('ref_img', 'tgt_img')),
]


def make_tiny_fiq(root: str, num_images: int = 14, num_triplets: int = 9, seed: int = 0,
                  ext: str = '.png') -> None:
    """A Fashion-IQ-format dataset: three categories, train and val, random images."""
    rng = random.Random(seed)
    os.makedirs(osp.join(root, 'captions'), exist_ok=True)
    os.makedirs(osp.join(root, 'image_splits'), exist_ok=True)
    k = 0
    for category in ('dress', 'shirt', 'toptee'):
        for split in ('train', 'val'):
            names = [f'{category[0].upper()}{split[0].upper()}{i:08d}' for i in range(num_images)]
            records = []
            for _ in range(num_triplets):
                candidate, target = rng.sample(names, 2)
                records.append(dict(target=target, candidate=candidate, captions=[
                    rng.choice(['is red', 'is darker.', '', 'has a bow']),
                    rng.choice(['shorter', 'with stripes?', 'longer sleeves'])]))
            with open(osp.join(root, 'captions', f'cap.{category}.{split}.json'), 'w') as f:
                json.dump(records, f, indent=4)
            with open(osp.join(root, 'image_splits', f'split.{category}.{split}.json'), 'w') as f:
                json.dump(names, f, indent=4)
            for name in names:
                k += 1
                write_image(osp.join(root, 'images', name + ext), seed=seed * 1000 + k)


def make_standin_circo(root: str, num_distractors: int = 200, size=(8, 8),
                       splits=('val', 'test')) -> dict:
    """CIRCO in its own layout: the official annotation files, a stand-in
    ``image_info_unlabeled2017.json`` listing every referenced id (in sorted order) followed by
    ``num_distractors`` new ids, and one small random image per listed id."""
    ann_dir = osp.join(root, 'annotations')
    os.makedirs(ann_dir, exist_ok=True)
    referenced = set()
    records = {}
    for split in splits:
        with open(shared_data('circo', 'annotations', f'{split}.json')) as f:
            records[split] = json.load(f)
        with open(osp.join(ann_dir, f'{split}.json'), 'w') as f:
            json.dump(records[split], f)
        for r in records[split]:
            referenced.update([r['reference_img_id'], *r.get('gt_img_ids', [])])
    ids = sorted(referenced) + [10_000_000 + i for i in range(num_distractors)]
    coco = osp.join(root, 'COCO2017_unlabeled')
    os.makedirs(osp.join(coco, 'annotations'), exist_ok=True)
    images = [dict(id=i, file_name=f'{i:012d}.png') for i in ids]
    with open(osp.join(coco, 'annotations', 'image_info_unlabeled2017.json'), 'w') as f:
        json.dump(dict(images=images), f)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (len(ids), size[1], size[0], 3), dtype=np.uint8)
    os.makedirs(osp.join(coco, 'unlabeled2017'), exist_ok=True)
    for image, array in zip(images, pixels):
        Image.fromarray(array).save(osp.join(coco, 'unlabeled2017', image['file_name']))
    return dict(records=records, ids=ids, root=root)
