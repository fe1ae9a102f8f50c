from .checkpoint import (UnsafeFileError, install_checkpoint_loader, load_local_checkpoint,
                         plain_data, safe_load)
from .hooks import (EpochSeedHook, FreezeVisionTowerHook, GalleryFeatureHook,
                    ImageSizeFromModelHook, NothingToResume, SafeCheckpointHook,
                    SafeCheckpointLoaderHook, encode_gallery)

__all__ = [
    'EpochSeedHook', 'FreezeVisionTowerHook', 'GalleryFeatureHook', 'ImageSizeFromModelHook',
    'NothingToResume', 'SafeCheckpointHook', 'SafeCheckpointLoaderHook', 'encode_gallery',
    'install_checkpoint_loader', 'load_local_checkpoint', 'plain_data', 'safe_load',
    'UnsafeFileError'
]
