from .base import BaseCIRModel
from .clip_backbone import OpenCLIPBackbone
from .clip_baseline import CLIPBaseline
from .data_preprocessor import CIRDataPreprocessor
from .fusion import SSNFusion
from .losses import SSNLoss
from .ssn import SSN

__all__ = [
    'BaseCIRModel', 'OpenCLIPBackbone', 'CLIPBaseline', 'CIRDataPreprocessor', 'SSNFusion',
    'SSNLoss', 'SSN'
]
