"""Gradient checkpointing (on in the ViT-H/14 recipes) changes memory, not results."""
import torch

from helpers import tiny_ssn_cfg
from ssn_plugin.registry import MODELS


def test_grad_checkpointing_changes_memory_not_results(tiny_clip_file):
    """Same loss and gradients with and without recomputation."""
    torch.manual_seed(0)
    plain = MODELS.build(tiny_ssn_cfg(tiny_clip_file))
    cfg = tiny_ssn_cfg(tiny_clip_file)
    cfg['backbone']['grad_checkpointing'] = True
    checkpointed = MODELS.build(cfg)
    checkpointed.load_state_dict(plain.state_dict())
    plain.eval(), checkpointed.eval()  # no dropout: identical forward passes
    images = torch.randn(3, 3, 32, 32)
    texts = ['make it red', 'remove the dog', 'add a cat']
    grads = []
    for model in (plain, checkpointed):
        model.zero_grad()
        query = model.query_features(images, texts)
        (query * model.gallery_features(images.flip(0))).sum().backward()
        grads.append(model.clip.model.visual.conv1.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
    assert grads[0].abs().sum() > 0
