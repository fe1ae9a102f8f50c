from .functional import (circo_metrics, cirr_recalls, fashioniq_recalls, rank_gallery,
                         recall_at_k, recalls_by_group)
from .metrics import (CIRCOMetric, CIRRMetric, FashionIQMetric, GalleryMetric,
                      TripletRecallMetric)

__all__ = [
    'circo_metrics', 'cirr_recalls', 'fashioniq_recalls', 'rank_gallery', 'recall_at_k',
    'recalls_by_group',
    'CIRCOMetric', 'CIRRMetric', 'FashionIQMetric', 'GalleryMetric', 'TripletRecallMetric'
]
