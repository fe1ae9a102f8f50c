"""Load every checkpoint of a run safely, and only checkpoints that fit the model."""
from mmengine.hooks import Hook

from ssn_plugin.registry import HOOKS
from ..checkpoint import check_checkpoint_fits, install_checkpoint_loader
from ..utils import unwrap_model


@HOOKS.register_module()
class SafeCheckpointLoaderHook(Hook):
    """Load checkpoints through :func:`~ssn_plugin.engine.load_local_checkpoint`, and only
    checkpoints that fit the model.

    ``before_run`` comes before the Runner loads (``load_from``) or resumes a checkpoint, in
    ``train()`` and ``test()`` alike, so every checkpoint a run reads is loaded with
    ``weights_only=True`` on any torch version. Every loaded checkpoint is then checked against
    the model (:func:`~ssn_plugin.engine.checkpoint.check_checkpoint_fits`).

    Args:
        strict (bool): Refuse a checkpoint with missing, unexpected or differently shaped
            tensors. False lets mmengine load the matching part (it warns). Defaults to True.
    """

    priority = 'VERY_HIGH'

    def __init__(self, strict: bool = True):
        self.strict = strict

    def before_run(self, runner) -> None:
        install_checkpoint_loader()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.strict:
            check_checkpoint_fits(unwrap_model(runner.model), checkpoint.get('state_dict', checkpoint))
