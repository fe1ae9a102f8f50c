from .onnx_retriever import OnnxRetriever
from .retriever import CIRRetriever, list_images
from ssn_plugin.visualization import draw_retrieval_grid

__all__ = ['CIRRetriever', 'OnnxRetriever', 'list_images', 'draw_retrieval_grid']
