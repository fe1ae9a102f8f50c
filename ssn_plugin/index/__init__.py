from .backends import BACKENDS, make_backend, parse_backend
from .build import update_index_folder
from .folder import IndexFolder, IndexFolderError
from .gallery_index import GalleryIndex

__all__ = ['BACKENDS', 'GalleryIndex', 'IndexFolder', 'IndexFolderError', 'make_backend',
           'parse_backend', 'update_index_folder']
