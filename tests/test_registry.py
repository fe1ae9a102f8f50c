"""The plugin contract: scope, parents, and extension from a downstream project."""
import torch
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from torch import nn

from helpers import TINY_CLIP, tiny_ssn_cfg
from ssn_plugin.registry import DATASETS, HOOKS, METRICS, MODELS, TRANSFORMS


def test_registries_are_children_of_mmpretrain():
    for registry in (MODELS, DATASETS, TRANSFORMS, METRICS, HOOKS):
        assert registry.scope == 'ssn_plugin'
        assert registry.parent.scope == 'mmpretrain'
    # Our modules and mmpretrain's are both reachable from our scope.
    assert MODELS.get('SSN').__name__ == 'SSN'
    assert MODELS.get('ImageClassifier').__module__.startswith('mmpretrain')
    assert TRANSFORMS.get('PackCIRInputs') is not None
    assert METRICS.get('CIRRMetric') is not None
    assert HOOKS.get('GalleryFeatureHook') is not None


class DownstreamFusion(nn.Module):
    """A fusion module a downstream project could write: a plain MLP over tokens."""

    def __init__(self, width: int, scale: float = 2.0):
        super().__init__()
        self.mlp = nn.Linear(width, width)
        self.scale = scale

    def forward(self, tokens, key_padding_mask=None):
        return self.scale * self.mlp(tokens)


def test_downstream_module_selected_from_config_and_built_by_runner(tmp_path):
    MODELS.register_module(name='DownstreamFusionForTest', module=DownstreamFusion, force=True)
    cfg = tiny_ssn_cfg(TINY_CLIP, fusion=dict(type='DownstreamFusionForTest', scale=3.0))
    runner = Runner(model=cfg, work_dir=str(tmp_path), default_scope='ssn_plugin',
                    experiment_name=f'registry_{id(cfg)}')
    model = runner.model
    assert isinstance(model.fusion, DownstreamFusion)
    assert model.fusion.scale == 3.0 and model.fusion.mlp.in_features == model.width
    model.eval()
    with torch.no_grad():
        feats = model.gallery_features(torch.randn(2, 3, 32, 32))
    assert feats.shape == (2, TINY_CLIP['embed_dim'])
    assert DefaultScope.get_current_instance().scope_name == 'ssn_plugin'
