from .functional import cirr_recalls, fashioniq_recalls, rank_gallery, recall_at_k
from .metrics import CIRRMetric, FashionIQMetric, GalleryMetric

__all__ = [
    'cirr_recalls', 'fashioniq_recalls', 'rank_gallery', 'recall_at_k', 'CIRRMetric',
    'FashionIQMetric', 'GalleryMetric'
]
