"""Freeze the CLIP vision tower from a given epoch on (the release's Fashion-IQ recipe)."""
from mmengine.hooks import Hook
from mmengine.logging import print_log

from ssn_plugin.registry import HOOKS
from ..utils import unwrap_model


@HOOKS.register_module()
class FreezeVisionTowerHook(Hook):
    """Freeze the CLIP vision tower from a given epoch on (the release's Fashion-IQ recipe).

    The release fine-tunes both towers in epoch 0 and only the text tower afterwards. The hook
    runs before every training epoch, so a resumed run freezes too. Under DDP set
    ``find_unused_parameters=True``: the frozen parameters stop receiving gradients.

    With the backbone's ``feature_cache`` on, the frozen tower's outputs are reused by image
    file; that is only right when the training pipeline gives an image the same pixels every
    time, so the hook refuses a training pipeline with a transform that does not declare
    ``deterministic_pixels = True`` (ours do; a random crop or flip does not).

    Args:
        epoch (int): First (0-based) epoch with a frozen vision tower. Defaults to 1.
    """

    priority = 'NORMAL'

    def __init__(self, epoch: int = 1):
        self.epoch = epoch

    def before_train(self, runner) -> None:
        if getattr(unwrap_model(runner.model).clip, 'feature_cache', None) is None:
            return
        pipeline = getattr(runner.train_dataloader.dataset, 'pipeline', None)
        other = [type(t).__name__ for t in getattr(pipeline, 'transforms', [])
                 if not getattr(t, 'deterministic_pixels', False)]
        if other:
            raise ValueError(
                f'the backbone\'s feature_cache reuses the frozen image tower\'s outputs per '
                f'image file, but the training pipeline has {other}, which may change an '
                'image between epochs (they do not declare deterministic_pixels = True); set '
                'feature_cache=False or use only transforms that give an image the same pixels '
                'every time')

    def before_train_epoch(self, runner) -> None:
        if runner.epoch < self.epoch:
            return
        model = unwrap_model(runner.model)
        params = model.clip.vision_parameters()
        if any(p.requires_grad for p in params):
            model.clip.set_trainable(vision=False)
            cached = (' Its outputs are cached per image from now on (feature_cache).'
                      if getattr(model.clip, 'feature_cache', None) is not None else '')
            print_log(f'Epoch {runner.epoch}: froze the CLIP vision tower ({len(params)} '
                      'tensors); only the text tower of CLIP is fine-tuned from now on.'
                      + cached, logger='current')

    def after_train_epoch(self, runner) -> None:
        cache = getattr(unwrap_model(runner.model).clip, 'feature_cache', None)
        if cache is not None and len(cache):
            print_log(f'Epoch {runner.epoch}: feature cache holds {len(cache)} images; '
                      f'{cache.hits} image encodings reused, {cache.misses} computed so far',
                      logger='current')
