from .clip_backbone import OpenCLIPBackbone
from .data_preprocessor import CIRDataPreprocessor
from .fusion import SSNFusion
from .losses import SSNLoss
from .ssn import SSN

__all__ = ['OpenCLIPBackbone', 'CIRDataPreprocessor', 'SSNFusion', 'SSNLoss', 'SSN']
