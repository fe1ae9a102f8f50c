from .base import BaseCIRDataset, CIRGalleryDataset, MissingImages
from .circo import CIRCO
from .custom import CustomCIRDataset
from .cirr import CIRR
from .fashioniq import FashionIQ
from .shapes import (ShapesCIRR, apply_instruction, generate_shapes_dataset,
                     generate_shapes_triplets)
from .transforms import (CLIPResizeCrop, ComposeFIQCaption, LoadCIRImages, PackCIRInputs,
                         TargetPad, fiq_caption, fill_image_size, fill_meta_keys)

__all__ = [
    'BaseCIRDataset', 'CIRGalleryDataset', 'MissingImages', 'CIRCO', 'CIRR', 'CustomCIRDataset',
    'FashionIQ', 'ShapesCIRR',
    'apply_instruction', 'generate_shapes_dataset', 'generate_shapes_triplets',
    'CLIPResizeCrop', 'ComposeFIQCaption', 'LoadCIRImages', 'PackCIRInputs', 'TargetPad',
    'fiq_caption', 'fill_image_size', 'fill_meta_keys'
]
