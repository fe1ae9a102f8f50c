"""The one image loader of the project: files become RGB images as a photo app shows them.

Training, evaluation, the image cache, the retriever, the decode check and the web page all
read images through :func:`read_image` (in-memory images through :func:`to_rgb`):

* a bound on pixels and on the aspect ratio, checked from the file's header before anything
  is decoded, with an error that names the file (a 661-byte 1 x 200,000 px PNG would
  otherwise cost gigabytes once resized);
* EXIF orientation applied (a phone photo reaches the model upright);
* 16-bit and 32-bit integer images scaled to 8 bits, float images from [0, 1] (or clipped
  to [0, 255]), transparency composited over white, palette/CMYK/grey converted to RGB.
"""
import os
import warnings
from typing import List, Optional, Tuple, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: At most this many pixels (a 64-megapixel photo); larger files are refused by name.
MAX_PIXELS = 64_000_000
#: At most this ratio of the long side to the short side (panoramas stay far below it).
MAX_ASPECT = 50.0


class ImageTooLarge(ValueError):
    """An image over :data:`MAX_PIXELS` or :data:`MAX_ASPECT` (a decompression bomb, or a
    strip that would be resized to gigabytes)."""


def file_stamp(path: str) -> List[int]:
    """(size, modification time in ns) of a file: what the image cache and the gallery indexes
    compare first to notice a changed image."""
    stat = os.stat(path)
    return [stat.st_size, stat.st_mtime_ns]


def check_size(size: Tuple[int, int], where: str, max_pixels: int = MAX_PIXELS,
               max_aspect: float = MAX_ASPECT) -> None:
    """Refuse an image ``size`` (width, height) over the bounds, naming ``where``.

    Raises:
        ImageTooLarge: with the size, the bound and what to do.
    """
    width, height = size
    if width < 1 or height < 1:
        raise ImageTooLarge(f'{where}: the image is {width}x{height} pixels; it has no pixels')
    if width * height > max_pixels:
        raise ImageTooLarge(f'{where}: the image is {width}x{height} = {width * height:,} '
                            f'pixels, over the bound of {max_pixels:,} (a decompression bomb '
                            'or a huge scan; downscale it first)')
    if max(width, height) / min(width, height) > max_aspect:
        raise ImageTooLarge(f'{where}: the image is {width}x{height} pixels, an aspect ratio '
                            f'over {max_aspect:g}:1 (resizing its short side would blow it up)')


def _scaled_to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    """A one-channel integer or float image as uint8."""
    if mode == 'F':
        array = np.nan_to_num(array.astype(np.float64))
        scale = 255.0 if array.size and array.max() <= 1.0 else 1.0
        return np.clip(array * scale, 0, 255).round().astype(np.uint8)
    array = array.astype(np.int64)
    if mode.startswith('I;16') or (array.size and array.max() > 255):
        return np.clip(array * 255 // 65535, 0, 255).astype(np.uint8)
    return np.clip(array, 0, 255).astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """An RGB image with the colours a viewer shows: high bit depths scaled, transparency
    over white."""
    if image.mode == 'RGB':
        return image.copy()
    if image.mode in ('I', 'F') or image.mode.startswith('I;16'):
        return Image.fromarray(_scaled_to_uint8(np.asarray(image), image.mode)).convert('RGB')
    if image.mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La') or 'transparency' in image.info:
        rgba = image.convert('RGBA')
        background = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert('RGB')
    return image.convert('RGB')


def read_image(path: str, max_pixels: int = MAX_PIXELS,
               max_aspect: float = MAX_ASPECT) -> Image.Image:
    """Decode an image file completely as RGB, upright (EXIF orientation applied).

    Raises:
        FileNotFoundError: the file does not exist.
        ImageTooLarge: over the pixel or aspect bound (checked before decoding).
        OSError: the file is not a readable image (truncated, empty, another format);
            the message names the file.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('error', Image.DecompressionBombWarning)
            with Image.open(path) as image:
                check_size(image.size, path, max_pixels, max_aspect)
                image.load()
                return to_rgb(ImageOps.exif_transpose(image))
    except FileNotFoundError as err:
        raise FileNotFoundError(f'image file not found: {path}') from err
    except ImageTooLarge:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageTooLarge(f'{path}: {err}') from err
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise OSError(f'cannot read image {path}: {type(err).__name__}: {err}') from err


def as_rgb_image(image: Union[str, Image.Image], where: Optional[str] = None) -> Image.Image:
    """:func:`read_image` for a path; the same checks and conversions for an in-memory image."""
    if isinstance(image, str):
        return read_image(image)
    check_size(image.size, where or 'an in-memory image')
    return to_rgb(ImageOps.exif_transpose(image))
