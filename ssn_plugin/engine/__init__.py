from . import checkpoint_compat
from .hooks import (FreezeVisionTowerHook, GalleryFeatureHook, ImageSizeFromModelHook,
                    encode_gallery)

# Registered on import: our hooks are imported whenever a config uses them, and the runner
# builds hooks before it loads or resumes a checkpoint.
checkpoint_compat.install()

__all__ = [
    'FreezeVisionTowerHook', 'GalleryFeatureHook', 'ImageSizeFromModelHook', 'encode_gallery',
    'checkpoint_compat'
]
