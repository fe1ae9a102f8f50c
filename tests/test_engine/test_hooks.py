"""FreezeVisionTowerHook freezes exactly the vision tower, from the configured epoch."""
from types import SimpleNamespace

from conftest import TINY_CLIP, tiny_ssn_cfg
from ssn_plugin.registry import HOOKS, MODELS


def test_freeze_vision_tower_at_epoch():
    model = MODELS.build(tiny_ssn_cfg(TINY_CLIP))
    hook = HOOKS.build(dict(type='FreezeVisionTowerHook', epoch=1))
    runner = SimpleNamespace(model=model, epoch=0)
    hook.before_train_epoch(runner)
    assert all(p.requires_grad for p in model.clip.vision_parameters())
    runner.epoch = 1
    hook.before_train_epoch(runner)
    vision = {id(p) for p in model.clip.vision_parameters()}
    assert vision and all(not p.requires_grad for p in model.clip.vision_parameters())
    others = [p for p in model.parameters() if id(p) not in vision]
    frozen_others = [n for n, p in model.named_parameters()
                     if id(p) not in vision and not p.requires_grad]
    # Only CLIP's unused temperature stays frozen besides the vision tower.
    assert frozen_others == ['clip.model.logit_scale']
    assert all(p.requires_grad for p in model.clip.text_parameters())
    assert len(others) > len(model.clip.text_parameters())
