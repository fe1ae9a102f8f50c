"""SSN for composed image retrieval, as an OpenMMLab plugin (scope ``ssn_plugin``)."""
from .version import __version__

__all__ = ['__version__']
