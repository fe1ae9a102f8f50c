"""Retrieval pictures: the query (reference + text) and its top-k results in one image.

Used by the metrics (``tools/test.py --show-dir``) and by :mod:`ssn_plugin.apis`; of ssn_plugin
it imports only the image loader (:mod:`ssn_plugin.image_io`), so both can import it.
"""
import textwrap
from typing import Optional, Sequence, Tuple, Union

from PIL import Image, ImageDraw, ImageFont, ImageOps

from ssn_plugin.image_io import as_rgb_image

QUERY_COLOUR = (52, 101, 164)
TRUTH_COLOUR = (46, 160, 67)
OTHER_COLOUR = (200, 200, 200)
BORDER = 4
LABEL_HEIGHT = 16


def _load(image: Union[str, Image.Image], tile: int) -> Image.Image:
    """A tile of an image file (read by the project's loader) or an in-memory image."""
    return ImageOps.pad(as_rgb_image(image), (tile, tile), color=(255, 255, 255))


def draw_retrieval_grid(reference: Union[str, Image.Image],
                        text: str,
                        results: Sequence[Tuple[Union[str, Image.Image], str, float]],
                        ground_truth: Optional[str] = None,
                        tile: int = 128) -> Image.Image:
    """Draw one row: the reference, then the ranked results with their scores.

    The text is written above the row. The reference is framed blue; the result whose name is
    ``ground_truth`` is framed green, the others grey.

    Args:
        reference (str | PIL.Image): The reference image or its path.
        text (str): The modification text.
        results (Sequence): ``(image or path, name, score)`` per result, best first.
        ground_truth (str, optional): Name of the known target. Defaults to None.
        tile (int): Side of each image tile in pixels. Defaults to 128.

    Returns:
        PIL.Image: width ``(len(results) + 1) * (tile + 2 * BORDER)``, height
        ``text_height + tile + 2 * BORDER + LABEL_HEIGHT``.
    """
    font = ImageFont.load_default()
    cell = tile + 2 * BORDER
    columns = len(results) + 1
    lines = textwrap.wrap(f'"{text.strip()}"', width=max(20, columns * cell // 7)) or ['""']
    text_height = 4 + 12 * len(lines)
    canvas = Image.new('RGB', (columns * cell, text_height + cell + LABEL_HEIGHT), 'white')
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((4, 2 + 12 * i), line, fill='black', font=font)
    tiles = [(reference, 'query', None, QUERY_COLOUR)]
    tiles += [(image, name, score, TRUTH_COLOUR if name == ground_truth else OTHER_COLOUR)
              for image, name, score in results]
    for col, (image, name, score, colour) in enumerate(tiles):
        x, y = col * cell, text_height
        draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour)
        canvas.paste(_load(image, tile), (x + BORDER, y + BORDER))
        label = name if score is None else f'{col}. {score:.3f}'
        draw.text((x + 2, y + cell + 2), label[:cell // 6], fill='black', font=font)
    return canvas
