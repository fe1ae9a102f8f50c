"""Query your own gallery: :class:`CIRRetriever` (PyTorch, the trained model) and
:class:`OnnxRetriever` (ONNX Runtime, an export of it).

Each name is imported when first used, so that ``from ssn_plugin.apis import OnnxRetriever``
needs neither torch nor mmengine: a serving install has only numpy, Pillow, onnxruntime,
regex and ftfy (README, "Export to ONNX").
"""
import importlib

_HOMES = dict(CIRRetriever='.retriever', OnnxRetriever='.onnx_retriever',
              list_images='.gallery', draw_retrieval_grid='ssn_plugin.visualization')

__all__ = ['CIRRetriever', 'OnnxRetriever', 'list_images', 'draw_retrieval_grid']


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = getattr(importlib.import_module(_HOMES[name], __name__), name)
    globals()[name] = value  # looked up once
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
