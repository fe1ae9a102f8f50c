from .checkpoint import (UnsafeFileError, install_checkpoint_loader, load_local_checkpoint,
                         safe_load)
from .hooks import (EpochSeedHook, FreezeVisionTowerHook, GalleryFeatureHook,
                    ImageSizeFromModelHook, SafeCheckpointLoaderHook, encode_gallery)

__all__ = [
    'EpochSeedHook', 'FreezeVisionTowerHook', 'GalleryFeatureHook', 'ImageSizeFromModelHook',
    'SafeCheckpointLoaderHook', 'encode_gallery', 'install_checkpoint_loader',
    'load_local_checkpoint', 'safe_load', 'UnsafeFileError'
]
