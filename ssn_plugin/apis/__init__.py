from .retriever import CIRRetriever, list_images
from ssn_plugin.visualization import draw_retrieval_grid

__all__ = ['CIRRetriever', 'list_images', 'draw_retrieval_grid']
