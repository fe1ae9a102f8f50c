"""Small helpers of the Runner glue."""
from mmengine.model import is_model_wrapper


def unwrap_model(model):
    """The model inside a DDP (or other mmengine) wrapper, or the model itself."""
    return model.module if is_model_wrapper(model) else model
