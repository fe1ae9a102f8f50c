from .base import BaseCIRModel
from .clip_backbone import OpenCLIPBackbone
from .clip_baseline import CLIPBaseline
from .combiner import Combiner
from .data_preprocessor import CIRDataPreprocessor
from .fusion import SSNFusion
from .losses import QueryToTargetCELoss, SSNLoss
from .ssn import SSN

__all__ = [
    'BaseCIRModel', 'OpenCLIPBackbone', 'CLIPBaseline', 'CIRDataPreprocessor', 'Combiner',
    'QueryToTargetCELoss', 'SSNFusion', 'SSNLoss', 'SSN'
]
