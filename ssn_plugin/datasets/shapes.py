"""A procedural composed-retrieval dataset in the CIRR layout: coloured shapes on a canvas.

Scenes hold one to three objects (shape, colour, size, slot on a 3 x 2 grid). An image set is a
base scene plus five single-instruction variants of it (colour, shape, size, position, add,
remove); its queries ask for a variant from the base scene with the instruction as text, so the
other variants are hard distractors in the gallery and in the six-image ``img_set``.

The files are CIRR's (``cirr/captions/cap.rc2.{train,val}.json``,
``cirr/image_splits/split.rc2.{train,val}.json``, images under ``images/train/<k>/`` and
``dev/``); each record also carries ``instruction_type``, which the CIRR loader ignores unless
``group_key='instruction_type'`` asks for it. ``shapes_scenes.json`` maps every image name to its
scene, and :func:`apply_instruction` re-applies a caption to a scene, so tests can check that
every caption turns its reference into its target.
"""
import json
import os
import os.path as osp
import random
import shutil
import tempfile
from typing import Dict, List, Optional, Tuple

from mmengine.logging import print_log
from PIL import Image, ImageDraw

from ssn_plugin.registry import DATASETS
from .cirr import CIRR

COLOURS = {
    'red': (220, 40, 40),
    'green': (40, 170, 60),
    'blue': (50, 80, 230),
    'yellow': (235, 205, 30),
    'purple': (150, 60, 180),
}
SHAPES = ('circle', 'square', 'triangle')
SIZES = {'small': 0.09, 'large': 0.15}  # radius as a fraction of the canvas side
SLOTS = ('top left', 'top center', 'top right', 'bottom left', 'bottom center', 'bottom right')
INSTRUCTION_TYPES = ('colour', 'shape', 'size', 'position', 'add', 'remove')

# An object is (shape, colour, size, slot); a scene is a sorted tuple of objects.
Obj = Tuple[str, str, str, str]
Scene = Tuple[Obj, ...]


def _scene(objects) -> Scene:
    return tuple(sorted(objects, key=lambda o: SLOTS.index(o[3])))


def _name(obj: Obj) -> str:
    return f'{obj[1]} {obj[0]}'


def _unambiguous(scene: Scene) -> bool:
    """Every object is named uniquely by 'colour shape'."""
    names = [_name(o) for o in scene]
    return len(set(names)) == len(names)


def render(scene: Scene, size: int = 64) -> Image.Image:
    """Draw a scene on a light grey canvas."""
    image = Image.new('RGB', (size, size), (235, 235, 235))
    draw = ImageDraw.Draw(image)
    for shape, colour, scale, slot in scene:
        row, col = divmod(SLOTS.index(slot), 3)
        cx, cy = (col + 0.5) * size / 3, (row + 0.5) * size / 2
        r = SIZES[scale] * size
        box = [cx - r, cy - r, cx + r, cy + r]
        if shape == 'circle':
            draw.ellipse(box, fill=COLOURS[colour])
        elif shape == 'square':
            draw.rectangle([cx - 0.85 * r, cy - 0.85 * r, cx + 0.85 * r, cy + 0.85 * r],
                           fill=COLOURS[colour])
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + 0.8 * r), (cx + r, cy + 0.8 * r)],
                         fill=COLOURS[colour])
    return image


def random_scene(rng: random.Random, fewest: int = 1, most: int = 3) -> Scene:
    """A scene of ``fewest`` to ``most`` objects, each named uniquely."""
    while True:
        slots = rng.sample(SLOTS, rng.randint(fewest, most))
        scene = _scene((rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(list(SIZES)),
                        slot) for slot in slots)
        if _unambiguous(scene):
            return scene


def modify(scene: Scene, kind: str, rng: random.Random) -> Optional[Tuple[Scene, str]]:
    """Apply one instruction of ``kind`` to a random object; return (scene, caption)."""
    objects = list(scene)
    free = [s for s in SLOTS if s not in {o[3] for o in objects}]
    if kind == 'add':
        if len(objects) >= 3:
            return None
        new = (rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(list(SIZES)),
               rng.choice(free))
        result = _scene(objects + [new])
        text = f'add a {new[2]} {new[1]} {new[0]} at the {new[3]}'
        return (result, text) if _unambiguous(result) else None
    if kind == 'remove':
        if len(objects) < 2:
            return None
        old = rng.choice(objects)
        return _scene(o for o in objects if o != old), f'remove the {_name(old)}'
    old = rng.choice(objects)
    shape, colour, scale, slot = old
    if kind == 'colour':
        colour = rng.choice([c for c in COLOURS if c != colour])
        text = f'make the {_name(old)} {colour}'
    elif kind == 'shape':
        shape = rng.choice([s for s in SHAPES if s != shape])
        text = f'turn the {_name(old)} into a {shape}'
    elif kind == 'size':
        scale = 'large' if scale == 'small' else 'small'
        text = f'make the {_name(old)} {scale}'
    elif kind == 'position':
        if not free:
            return None
        slot = rng.choice(free)
        text = f'move the {_name(old)} to the {slot}'
    else:
        raise ValueError(f'unknown instruction type {kind!r}')
    result = _scene([o for o in objects if o != old] + [(shape, colour, scale, slot)])
    return (result, text) if _unambiguous(result) else None


def apply_instruction(scene: Scene, text: str) -> Scene:
    """Parse a generated caption and apply it to ``scene`` (the inverse of the templates); the
    hard variant's two-part captions ("... and ...") part after part."""
    if ' and ' in text:
        for part in text.split(' and '):
            scene = apply_instruction(scene, part)
        return scene
    words = text.split()
    if words[0] == 'add':
        scale, colour, shape = words[2:5]
        slot = ' '.join(words[7:])
        return _scene(list(scene) + [(shape, colour, scale, slot)])
    if words[0] == 'remove':
        target = ' '.join(words[2:4])
        return _scene(o for o in scene if _name(o) != target)
    target = ' '.join(words[2:4])
    old = next(o for o in scene if _name(o) == target)
    shape, colour, scale, slot = old
    if words[0] == 'turn':
        shape = words[-1]
    elif words[0] == 'move':
        slot = ' '.join(words[6:])
    elif words[-1] in SIZES:
        scale = words[-1]
    else:
        colour = words[-1]
    return _scene([o for o in scene if o != old] + [(shape, colour, scale, slot)])


def _image_set(rng: random.Random) -> Tuple[Scene, List[Tuple[Scene, str, str]]]:
    """A base scene and five distinct single-instruction variants of it."""
    while True:
        base = random_scene(rng)
        variants, seen = [], {base}
        kinds = list(INSTRUCTION_TYPES)
        rng.shuffle(kinds)
        for kind in kinds * 3:
            if len(variants) == 5:
                break
            out = modify(base, kind, rng)
            if out is not None and out[0] not in seen:
                seen.add(out[0])
                variants.append((out[0], out[1], kind))
        if len(variants) == 5:
            return base, variants


DIFFICULTIES = ('standard', 'hard')


def generate_shapes_dataset(root: str, seed: int = 0, num_train_sets: int = 3000,
                            num_val_sets: int = 500, queries_per_set: int = 2,
                            image_size: int = 64, difficulty: str = 'standard'
                            ) -> Dict[str, int]:
    """Write the dataset under ``root`` (CIRR layout). Deterministic for a given seed.

    ``difficulty='hard'`` writes the hard variant (:mod:`ssn_plugin.datasets.shapes_hard`:
    four or five objects, each image set's variants of one instruction family, two-part
    instructions), whose instruction types are its families.

    Returns:
        dict: number of triplets and images per split.
    """
    if difficulty not in DIFFICULTIES:
        raise ValueError(f'difficulty must be one of {DIFFICULTIES}, got {difficulty!r}')
    from .shapes_hard import hard_image_set  # it builds on this module's scenes
    image_set = hard_image_set if difficulty == 'hard' else _image_set
    rng = random.Random(seed)
    scenes: Dict[str, list] = {}
    counts = {}
    # Pairids are unique across splits, as CIRR's (val starts at 1,000,000).
    for split, prefix, num_sets, first_pairid in (('train', 'train', num_train_sets, 0),
                                                  ('val', 'dev', num_val_sets, 1_000_000)):
        records, rels = [], {}
        for set_id in range(num_sets):
            base, variants = image_set(rng)
            members = [(base, None, None)] + variants
            names = [f'{prefix}-{set_id}-{i}-img0' for i in range(6)]
            for name, (scene, _, _) in zip(names, members):
                rel = (f'./train/{set_id % 100}/{name}.png' if split == 'train' else
                       f'./dev/{name}.png')
                rels[name] = rel
                scenes[name] = [list(o) for o in scene]
                folder = osp.join(root, 'images') if split == 'train' else root
                path = osp.join(folder, rel)
                os.makedirs(osp.dirname(path), exist_ok=True)
                render(scene, image_size).save(path)
            order = list(range(6))
            rng.shuffle(order)
            for q, i in enumerate(rng.sample(range(1, 6), queries_per_set)):
                records.append(dict(
                    pairid=first_pairid + len(records), reference=names[0],
                    target_hard=names[i],
                    target_soft={names[i]: 1.0}, caption=variants[i - 1][1],
                    img_set=dict(id=set_id, members=[names[j] for j in order],
                                 reference_rank=order.index(0), target_rank=order.index(i)),
                    instruction_type=variants[i - 1][2]))
        for sub, content in (('captions', records), ('image_splits', rels)):
            folder = osp.join(root, 'cirr', sub)
            os.makedirs(folder, exist_ok=True)
            name = 'cap' if sub == 'captions' else 'split'
            with open(osp.join(folder, f'{name}.rc2.{split}.json'), 'w') as f:
                json.dump(content, f)
        counts[f'{split}_triplets'] = len(records)
        counts[f'{split}_images'] = len(rels)
    with open(osp.join(root, 'shapes_scenes.json'), 'w') as f:
        json.dump(scenes, f)
    return counts


@DATASETS.register_module()
class ShapesCIRR(CIRR):
    """:class:`CIRR` on the generated shapes dataset, generating it first if ``data_root`` is
    absent (written to a temporary folder and moved into place, so a crash never leaves half a
    dataset). All other arguments are CIRR's; ``generator`` holds
    :func:`generate_shapes_dataset`'s keyword arguments.
    """

    def __init__(self, data_root: str, split: str, generator: Optional[dict] = None,
                 **kwargs):
        if not osp.isdir(data_root):
            generator = dict(generator or {})
            print_log(f'Generating the shapes demo dataset into {data_root} ({generator})',
                      logger='current')
            parent = osp.dirname(osp.abspath(data_root))
            os.makedirs(parent, exist_ok=True)
            tmp = tempfile.mkdtemp(dir=parent, prefix='.shapes_tmp_')
            counts = generate_shapes_dataset(tmp, **generator)
            try:
                os.rename(tmp, data_root)
            except OSError:  # another process finished first
                shutil.rmtree(tmp, ignore_errors=True)
            print_log(f'Generated {counts}', logger='current')
        super().__init__(data_root=data_root, split=split, **kwargs)


def generate_shapes_triplets(root: str, seed: int = 0, num_train_sets: int = 3000,
                             num_val_sets: int = 500, queries_per_set: int = 2,
                             image_size: int = 64) -> Dict[str, int]:
    """Write the shapes dataset in the own-triplets layout of
    :class:`~ssn_plugin.datasets.CustomCIRDataset` under ``root``: ``train.jsonl``,
    ``val.jsonl`` (``id`` = the CIRR pairid, ``group`` = the instruction type), ``gallery.txt``
    (the val images no triplet names: the other variants of each image set, as distractors)
    and ``images/{train/<k>,dev}/``. The same scenes and captions as
    :func:`generate_shapes_dataset` with the same arguments.

    Returns:
        dict: number of triplets and images per split.
    """
    parent = osp.dirname(osp.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix='.shapes_cirr_')
    try:
        counts = generate_shapes_dataset(tmp, seed=seed, num_train_sets=num_train_sets,
                                         num_val_sets=num_val_sets,
                                         queries_per_set=queries_per_set, image_size=image_size)
        os.makedirs(osp.join(root, 'images'), exist_ok=True)
        for split in ('train', 'val'):
            with open(osp.join(tmp, 'cirr', 'captions', f'cap.rc2.{split}.json')) as f:
                records = json.load(f)
            with open(osp.join(tmp, 'cirr', 'image_splits', f'split.rc2.{split}.json')) as f:
                rels = {name: osp.normpath(rel) for name, rel in json.load(f).items()}
            source = osp.join(tmp, 'images') if split == 'train' else tmp
            for rel in rels.values():
                os.makedirs(osp.dirname(osp.join(root, 'images', rel)), exist_ok=True)
                os.replace(osp.join(source, rel), osp.join(root, 'images', rel))
            with open(osp.join(root, f'{split}.jsonl'), 'w') as f:
                for r in records:
                    f.write(json.dumps(dict(
                        id=str(r['pairid']), reference=rels[r['reference']],
                        caption=r['caption'], target=rels[r['target_hard']],
                        group=r['instruction_type'])) + '\n')
            if split == 'val':
                named = {n for r in records for n in (r['reference'], r['target_hard'])}
                with open(osp.join(root, 'gallery.txt'), 'w') as f:
                    f.writelines(f'{rel}\n' for name, rel in rels.items() if name not in named)
        os.replace(osp.join(tmp, 'shapes_scenes.json'), osp.join(root, 'shapes_scenes.json'))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return counts
