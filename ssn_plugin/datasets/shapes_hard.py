"""The hard variant of the shapes dataset (``generate_shapes_dataset(difficulty='hard')``): a
benchmark on which a model must use both the reference image and the text.

A hard image set is a base scene of four or five objects and five variants of it made by
instructions of ONE family, so that every variant is a near miss of every other:

- ``remove``: each variant removes another object ("remove the red circle");
- ``colour`` / ``shape`` / ``size``: the same kind of change on other objects or to other values
  ("make the red circle blue" next to "make the red circle green" and "make the blue square
  red");
- ``remove+colour`` and ``colour+shape``: two-part instructions ("remove the red circle and make
  the blue square green"), whose variants differ in one of the two parts.

A query asks for one variant from the base with its instruction; the other four are in its
``img_set`` and in the gallery. The image alone cannot tell the five apart (each differs from
the base by the same amount), and the text alone names only what changes, not the rest of the
scene, which the gallery's other image sets supply in thousands.
"""
import random
from typing import List, Optional, Tuple

from .shapes import Scene, modify, random_scene

HARD_FAMILIES = ('remove', 'colour', 'shape', 'size', 'remove+colour', 'colour+shape')


def _variant(base: Scene, family: str, rng: random.Random) -> Optional[Tuple[Scene, str]]:
    """A variant of ``base`` by an instruction of ``family`` (parts joined by 'and')."""
    scene, words = base, []
    for kind in family.split('+'):
        out = modify(scene, kind, rng)
        if out is None:
            return None
        scene, text = out
        words.append(text)
    return scene, ' and '.join(words)


def hard_image_set(rng: random.Random) -> Tuple[Scene, List[Tuple[Scene, str, str]]]:
    """A base scene and five distinct variants of one instruction family (the family is the
    variants' instruction type)."""
    while True:
        base = random_scene(rng, fewest=4, most=5)
        family = rng.choice(HARD_FAMILIES)
        variants, seen = [], {base}
        for _ in range(60):
            out = _variant(base, family, rng)
            if out is not None and out[0] not in seen:
                seen.add(out[0])
                variants.append((out[0], out[1], family))
                if len(variants) == 5:
                    return base, variants
