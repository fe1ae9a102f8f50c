from .functional import (cirr_recalls, fashioniq_recalls, rank_gallery, recall_at_k,
                         recalls_by_group)
from .metrics import CIRRMetric, FashionIQMetric, GalleryMetric

__all__ = [
    'cirr_recalls', 'fashioniq_recalls', 'rank_gallery', 'recall_at_k', 'recalls_by_group',
    'CIRRMetric', 'FashionIQMetric', 'GalleryMetric'
]
