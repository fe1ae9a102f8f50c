"""The Runner hooks of ssn_plugin, one a file (as mmengine's ``mmengine/hooks/``)."""
from .epoch_seed_hook import EpochSeedHook
from .freeze_vision_tower_hook import FreezeVisionTowerHook
from .gallery_feature_hook import GalleryFeatureHook, encode_gallery
from .image_size_from_model_hook import ImageSizeFromModelHook
from .safe_checkpoint_hook import SafeCheckpointHook
from .safe_checkpoint_loader_hook import NothingToResume, SafeCheckpointLoaderHook

__all__ = [
    'EpochSeedHook', 'FreezeVisionTowerHook', 'GalleryFeatureHook', 'ImageSizeFromModelHook',
    'NothingToResume', 'SafeCheckpointHook', 'SafeCheckpointLoaderHook', 'encode_gallery'
]
