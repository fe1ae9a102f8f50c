from .checkpoint import install_checkpoint_loader, load_local_checkpoint
from .hooks import (FreezeVisionTowerHook, GalleryFeatureHook, ImageSizeFromModelHook,
                    SafeCheckpointLoaderHook, encode_gallery)

__all__ = [
    'FreezeVisionTowerHook', 'GalleryFeatureHook', 'ImageSizeFromModelHook',
    'SafeCheckpointLoaderHook', 'encode_gallery', 'install_checkpoint_loader',
    'load_local_checkpoint'
]
