"""Transforms for composed image retrieval samples.

A CIR sample holds up to two images under named keys: ``ref_img`` and ``tgt_img`` for training
triplets and queries, ``img`` for gallery images. Each transform works on the keys it is given
and skips a key whose ``<key>_path`` is None (for example the unknown target of a test query).
Images travel as RGB ``PIL.Image`` until :class:`PackCIRInputs` turns them into uint8 tensors;
normalisation happens in :class:`~ssn_plugin.models.CIRDataPreprocessor`.
"""
import random as _random
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine.structures import BaseDataElement
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from ssn_plugin.registry import TRANSFORMS
from ssn_plugin.image_io import read_image

IMAGE_KEYS = ('ref_img', 'tgt_img', 'img')


def _present(results: dict, keys: Sequence[str]):
    """Yield the keys whose image was loaded in this sample."""
    for key in keys:
        if results.get(key) is not None:
            yield key


@TRANSFORMS.register_module()
class LoadCIRImages(BaseTransform):
    """Read the images of a sample as RGB PIL images.

    Required keys: ``<key>_path`` for each key (None = no image for that key).
    Added keys: ``<key>`` (PIL.Image or None), ``<key>_shape`` ((h, w) or None).

    Files are read by :func:`~ssn_plugin.image_io.read_image`: upright (EXIF
    orientation), high bit depths and transparency converted as a viewer shows them, and
    images over the pixel or aspect bound refused by name.

    Args:
        keys (Sequence[str]): Image keys to load. Defaults to ``('ref_img', 'tgt_img')``.
    """

    #: An image file gives the same pixels at every call (read by FreezeVisionTowerHook).
    deterministic_pixels = True

    def __init__(self, keys: Sequence[str] = ('ref_img', 'tgt_img')):
        self.keys = tuple(keys)

    def transform(self, results: dict) -> dict:
        for key in self.keys:
            path_key = f'{key}_path'
            if path_key not in results:
                raise KeyError(f'LoadCIRImages(keys={self.keys}) needs "{path_key}" in the '
                               f'sample; it has {sorted(results)}')
            path = results[path_key]
            if path is None:
                results[key] = results[f'{key}_shape'] = None
                continue
            image = read_image(path)
            results[key] = image
            results[f'{key}_shape'] = (image.height, image.width)
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(keys={self.keys})'


@TRANSFORMS.register_module()
class CLIPResizeCrop(BaseTransform):
    """CLIP's preprocessing: resize the shorter side (bicubic), then center-crop to the input size.

    This is the SSN release's choice (HuggingFace ``CLIPImageProcessor``).

    Required keys: ``<key>`` (PIL.Image). Modified keys: ``<key>``.

    Args:
        size (int | tuple[int, int], optional): Output size, a side length or (H, W). None (the
            recipes' choice) means the model's input resolution: the Runner's
            :class:`~ssn_plugin.engine.ImageSizeFromModelHook` and the retriever fill it in
            (:func:`fill_image_size`) from the model they run. Defaults to None.
        keys (Sequence[str]): Image keys. Defaults to ``IMAGE_KEYS``.
    """

    deterministic_pixels = True

    def __init__(self, size: Optional[Union[int, Sequence[int]]] = None,
                 keys: Sequence[str] = IMAGE_KEYS):
        self.size = size if size is None or isinstance(size, int) else tuple(size)
        self.keys = tuple(keys)

    def transform(self, results: dict) -> dict:
        if self.size is None:
            raise RuntimeError(
                'CLIPResizeCrop(size=None) takes its size from the model, but no model filled it '
                'in: run the config through the Runner (ImageSizeFromModelHook, in '
                'default_runtime.py) or CIRRetriever, call fill_image_size(), or set `size`.')
        height, width = (self.size, self.size) if isinstance(self.size, int) else self.size
        for key in _present(results, self.keys):
            image = TF.resize(results[key], max(height, width),
                              interpolation=InterpolationMode.BICUBIC)
            results[key] = TF.center_crop(image, [height, width])
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(size={self.size}, keys={self.keys})'


def fill_image_size(transforms: Sequence, size: Sequence[int]) -> int:
    """Give every :class:`CLIPResizeCrop` whose ``size`` is unset the model's input size.

    Explicit sizes are kept (a wrong one is reported by the backbone at the first batch).

    Args:
        transforms (Sequence): Built transforms (a pipeline's list or ``Compose.transforms``).
        size (Sequence[int]): The model's (H, W).

    Returns:
        int: how many transforms were filled in.
    """
    height, width = size
    filled = 0
    for transform in transforms:
        if isinstance(transform, CLIPResizeCrop) and transform.size is None:
            transform.size = height if height == width else (height, width)
            filled += 1
        # A transform that stands for others (the image cache's lookup) holds them.
        filled += fill_image_size(getattr(transform, 'transforms', None) or [], size)
    return filled


def target_pad_amounts(width: int, height: int, target_ratio: float) -> Tuple[int, int]:
    """CLIP4Cir's TargetPad: symmetric (horizontal, vertical) black padding per side.

    An image whose aspect ratio (long/short) is below ``target_ratio`` is left alone; otherwise
    each side is padded so that the long side / ``target_ratio`` is reached.
    """
    long_side = max(width, height)
    if long_side / min(width, height) < target_ratio:
        return 0, 0
    goal = long_side / target_ratio
    return max(int((goal - width) / 2), 0), max(int((goal - height) / 2), 0)


@TRANSFORMS.register_module()
class TargetPad(BaseTransform):
    """Pad elongated images towards ``target_ratio`` with black (CLIP4Cir's default).

    Follow it with :class:`CLIPResizeCrop` to get CLIP4Cir's "targetpad" preprocessing.

    Required keys: ``<key>`` (PIL.Image). Modified keys: ``<key>``.

    Args:
        target_ratio (float): Largest aspect ratio kept unpadded. Defaults to 1.25.
        keys (Sequence[str]): Image keys. Defaults to ``IMAGE_KEYS``.
    """

    deterministic_pixels = True

    def __init__(self, target_ratio: float = 1.25, keys: Sequence[str] = IMAGE_KEYS):
        if target_ratio < 1:
            raise ValueError(f'target_ratio must be >= 1, got {target_ratio}')
        self.target_ratio = target_ratio
        self.keys = tuple(keys)

    def transform(self, results: dict) -> dict:
        for key in _present(results, self.keys):
            image = results[key]
            hp, vp = target_pad_amounts(image.width, image.height, self.target_ratio)
            if hp or vp:
                results[key] = TF.pad(image, [hp, vp, hp, vp], fill=0)
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(target_ratio={self.target_ratio}, '
                f'keys={self.keys})')


def pil_to_uint8_tensor(image: Union[Image.Image, np.ndarray]) -> torch.Tensor:
    """An RGB image as a uint8 tensor [3, H, W]."""
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


@TRANSFORMS.register_module()
class PackCIRInputs(BaseTransform):
    """Pack images into ``inputs`` and the sample's metadata into a data sample.

    Required keys: the image keys that are present. Added keys: ``inputs`` (dict of uint8
    tensors [3, H, W], one per loaded image key), ``data_samples`` (``BaseDataElement`` whose
    metainfo holds the ``meta_keys`` found in the sample).

    Args:
        keys (Sequence[str]): Image keys to pack. Defaults to ``IMAGE_KEYS``.
        meta_keys (Sequence[str], optional): Sample fields copied to the data sample. None
            (the recipes' choice) means the keys the dataset declares: a
            :class:`~ssn_plugin.datasets.BaseCIRDataset` fills in its ``META_KEYS`` (queries,
            triplets) or ``GALLERY_META_KEYS`` (gallery images) with :func:`fill_meta_keys`;
            left None outside a dataset, nothing but the images is packed. Defaults to None.
    """

    deterministic_pixels = True

    def __init__(self, keys: Sequence[str] = IMAGE_KEYS,
                 meta_keys: Optional[Sequence[str]] = None):
        self.keys = tuple(keys)
        self.meta_keys = None if meta_keys is None else tuple(meta_keys)

    def transform(self, results: dict) -> dict:
        inputs = {key: pil_to_uint8_tensor(results[key]) for key in _present(results, self.keys)}
        if not inputs:
            raise KeyError(f'PackCIRInputs found none of the image keys {self.keys} loaded '
                           'in the sample; is LoadCIRImages in the pipeline?')
        meta = {key: results[key] for key in self.meta_keys or () if key in results}
        return dict(inputs=inputs, data_samples=BaseDataElement(metainfo=meta))

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(keys={self.keys}, meta_keys={self.meta_keys})'


def fill_meta_keys(transforms: Sequence, meta_keys: Sequence[str]) -> int:
    """Give every :class:`PackCIRInputs` whose ``meta_keys`` is unset the dataset's keys.

    Returns:
        int: how many transforms were filled in.
    """
    filled = 0
    for transform in transforms:
        if isinstance(transform, PackCIRInputs) and transform.meta_keys is None:
            transform.meta_keys = tuple(meta_keys)
            filled += 1
    return filled


def _strip(caption: str) -> str:
    return caption.strip('.?, ')


def _lead(caption: str) -> str:
    """The release's s(x): strip '.?, ' then ``str.capitalize``."""
    return _strip(caption).capitalize()


def fiq_caption(c1: str, c2: str, u: Optional[float] = None) -> str:
    """Compose Fashion-IQ's two captions as the release does (docs/method.md, section 4).

    ``u=None`` gives the evaluation form "s(c1) and c2". A draw ``u`` in [0, 1) picks a
    training form: u < 0.25 "s(c1) and c2"; 0.25 < u < 0.5 "s(c2) and c1"; 0.5 < u < 0.75
    "s(c1)"; otherwise "s(c2)" (so u exactly 0.25 or 0.5 gives "s(c2)", as the release).
    s(x) strips '.?, ' and capitalises. Unlike the release, an empty caption never leaves a
    dangling "and": the other caption is used alone.
    """
    first, second = c1, c2
    if u is None or u < 0.25:
        pair = True
    elif 0.25 < u < 0.5:
        first, second, pair = c2, c1, True
    elif 0.5 < u < 0.75:
        pair = False
    else:
        first, second, pair = c2, c1, False
    if not _strip(first):
        return _lead(second)
    if pair and _strip(second):
        return f'{_lead(first)} and {_strip(second)}'
    return _lead(first)


@TRANSFORMS.register_module()
class ComposeFIQCaption(BaseTransform):
    """Build ``text`` from Fashion-IQ's two captions (see :func:`fiq_caption`).

    Required keys: ``captions`` (two strings). Added keys: ``text``.

    Args:
        random (bool): Draw one of the four training forms per call (Python's ``random``,
            which MMEngine seeds per worker); False gives the evaluation form.
            Defaults to False.
    """

    #: Changes the text only, even with ``random=True``.
    deterministic_pixels = True

    def __init__(self, random: bool = False):
        self.random = random

    def transform(self, results: dict) -> dict:
        c1, c2 = results['captions']
        results['text'] = fiq_caption(c1, c2, _random.random() if self.random else None)
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(random={self.random})'
