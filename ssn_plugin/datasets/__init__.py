from .base import BaseCIRDataset, CIRGalleryDataset, MissingImages
from .cirr import CIRR
from .transforms import CLIPResizeCrop, LoadCIRImages, PackCIRInputs, TargetPad

__all__ = [
    'BaseCIRDataset', 'CIRGalleryDataset', 'MissingImages', 'CIRR', 'CLIPResizeCrop',
    'LoadCIRImages', 'PackCIRInputs', 'TargetPad'
]
