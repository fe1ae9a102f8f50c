from .base import BaseCIRDataset, CIRGalleryDataset, MissingImages
from .cirr import CIRR
from .fashioniq import FashionIQ
from .transforms import (CLIPResizeCrop, ComposeFIQCaption, LoadCIRImages, PackCIRInputs,
                         TargetPad, fiq_caption)

__all__ = [
    'BaseCIRDataset', 'CIRGalleryDataset', 'MissingImages', 'CIRR', 'FashionIQ',
    'CLIPResizeCrop', 'ComposeFIQCaption', 'LoadCIRImages', 'PackCIRInputs', 'TargetPad',
    'fiq_caption'
]
