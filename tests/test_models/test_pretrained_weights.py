"""Real-weights paths without a network: the activation and preprocessing follow the weights.

open_clip's download functions are replaced by ones that hand out a local random checkpoint (or
raise), so the tests exercise open_clip's real tag tables and our resolution of them.
"""
import open_clip
import open_clip.pretrained as oc_pretrained
import pytest
import torch
from open_clip.transformer import QuickGELU
from torch import nn

from helpers import TINY_CLIP
from ssn_plugin.models import OpenCLIPBackbone
from ssn_plugin.models.clip_backbone import is_torchscript_file, skip_pretrained_weights
from ssn_plugin.registry import MODELS


def activations(backbone: OpenCLIPBackbone) -> set:
    """The activation module types of every MLP in both towers."""
    return {type(m) for m in backbone.modules() if isinstance(m, (nn.GELU, QuickGELU))}


def serve_downloads(monkeypatch, path=None):
    """open_clip's URL and hub downloads return ``path``; with None they fail like no network."""
    calls = []

    def fake(*args, **kwargs):
        calls.append(args)
        if path is None:
            raise ConnectionError('no network in tests')
        return path

    monkeypatch.setattr(oc_pretrained, 'download_pretrained_from_url', fake)
    monkeypatch.setattr(oc_pretrained, 'download_pretrained_from_hf', fake)
    return calls


@pytest.fixture(scope='module')
def vit_b32_file(tmp_path_factory):
    """A random ViT-B-32 state dict in open_clip's format (what a tag download yields)."""
    torch.manual_seed(0)
    model = open_clip.CLIP(**open_clip.get_model_config('ViT-B-32'))
    path = tmp_path_factory.mktemp('weights') / 'open_clip_pytorch_model.bin'
    torch.save({k: v.half() for k, v in model.state_dict().items()}, path)
    return str(path), model.state_dict()['visual.conv1.weight'].half().float()


@pytest.mark.parametrize('tag, expected', [
    ('openai', QuickGELU),
    ('laion400m_e32', QuickGELU),
    ('laion2b_s34b_b79k', nn.GELU),
    ('datacomp_xl_s13b_b90k', nn.GELU),
])
def test_tag_decides_the_activation(monkeypatch, vit_b32_file, tag, expected):
    path, conv1 = vit_b32_file
    calls = serve_downloads(monkeypatch, path)
    backbone = OpenCLIPBackbone('ViT-B-32', pretrained=tag)
    assert calls, 'the tag was not fetched through open_clip'
    assert activations(backbone) == {expected}
    assert torch.equal(backbone.model.visual.conv1.weight, conv1)  # the weights were loaded
    # open_clip's own factory builds GELU for every tag (it only warns): the bug we avoid.
    assert open_clip.get_model_config('ViT-B-32').get('quick_gelu', False) is False


def test_tag_contradicted_by_explicit_quick_gelu_is_refused(monkeypatch):
    serve_downloads(monkeypatch, None)
    with pytest.raises(ValueError, match="'openai' were trained with QuickGELU"):
        OpenCLIPBackbone('ViT-B-32', pretrained='openai', quick_gelu=False)


def test_load_pretrained_false_builds_the_tag_architecture_offline(monkeypatch):
    calls = serve_downloads(monkeypatch, None)
    backbone = OpenCLIPBackbone('ViT-B-32', pretrained='openai', load_pretrained=False)
    assert activations(backbone) == {QuickGELU} and not calls
    with pytest.raises(RuntimeError, match='no network in tests'):
        OpenCLIPBackbone('ViT-B-32', pretrained='openai')


def write_torchscript(path, quick_gelu=True):
    """A TorchScript archive of a tiny CLIP: the format of OpenAI's original ViT-B-32.pt."""
    torch.manual_seed(1)
    model = open_clip.CLIP(**TINY_CLIP, quick_gelu=quick_gelu).eval()
    traced = torch.jit.trace_module(model, dict(encode_image=torch.ones(1, 3, 32, 32)),
                                    check_trace=False)
    torch.jit.save(traced, str(path))
    return model


def test_openai_format_file_needs_quick_gelu(tmp_path):
    path = tmp_path / 'my_clip.pt'
    source = write_torchscript(path)
    assert is_torchscript_file(str(path))
    with pytest.raises(ValueError, match=r'OpenAI\'s TorchScript format.*quick_gelu=True'):
        OpenCLIPBackbone(TINY_CLIP, pretrained=str(path))
    loaded = OpenCLIPBackbone(TINY_CLIP, pretrained=str(path), quick_gelu=True)
    assert activations(loaded) == {QuickGELU}
    for name, value in source.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], value), name


@pytest.mark.slow
def test_local_file_activation_from_the_architecture_name(tmp_path):
    # A QuickGELU checkpoint in open_clip's format, under the name open_clip downloads it as.
    quick = open_clip.CLIP(**open_clip.get_model_config('ViT-B-32-quickgelu'))
    path = tmp_path / 'ViT-B-32.pt'
    torch.save(quick.state_dict(), path)
    with pytest.raises(ValueError, match='name of an open_clip download of QuickGELU'):
        OpenCLIPBackbone('ViT-B-32', pretrained=str(path))
    assert activations(OpenCLIPBackbone('ViT-B-32-quickgelu', pretrained=str(path))) == {
        QuickGELU}
    assert activations(OpenCLIPBackbone('ViT-B-32', pretrained=str(path),
                                        quick_gelu=True)) == {QuickGELU}
    # A config dict says it itself.
    assert activations(OpenCLIPBackbone(dict(TINY_CLIP, quick_gelu=True))) == {QuickGELU}
    assert activations(OpenCLIPBackbone(TINY_CLIP)) == {nn.GELU}


def test_preprocessing_follows_the_weights(monkeypatch):
    serve_downloads(monkeypatch, None)
    # laion2b_s32b_b82k ViT-L-14 weights were trained with mean = std = 0.5.
    backbone = OpenCLIPBackbone('ViT-L-14', pretrained='laion2b_s32b_b82k',
                                load_pretrained=False)
    assert backbone.preprocess_cfg['mean'] == (0.5, 0.5, 0.5)
    assert backbone.preprocess_cfg['size'] == (224, 224)
    # A config dict may carry its own preprocess_cfg; SSN's data preprocessor adopts it unless
    # the config sets mean/std explicitly.
    arch = dict(TINY_CLIP, preprocess_cfg=dict(mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.5)))
    base = dict(type='SSN', backbone=dict(type='OpenCLIPBackbone', arch=arch),
                fusion=dict(type='SSNFusion', num_heads=2, ffn_dim=64))
    model = MODELS.build(base)
    assert torch.allclose(model.data_preprocessor.mean.flatten(),
                          torch.tensor([0.1, 0.2, 0.3]) * 255)
    assert torch.allclose(model.data_preprocessor.std.flatten(), torch.full((3, ), 0.5 * 255))
    model = MODELS.build(dict(base, data_preprocessor=dict(type='CIRDataPreprocessor',
                                                           mean=(0.0, 0.0, 0.0))))
    assert torch.equal(model.data_preprocessor.mean.flatten(), torch.zeros(3))
    assert torch.allclose(model.data_preprocessor.std.flatten(), torch.full((3, ), 0.5 * 255))


def test_wrong_input_size_is_named():
    backbone = OpenCLIPBackbone(TINY_CLIP)
    with pytest.raises(ValueError, match=r'images are \(224, 224\) pixels .* \(32, 32\)'):
        backbone.encode_image(torch.zeros(1, 3, 224, 224))


def test_skip_pretrained_weights_reaches_nested_backbones():
    cfg = dict(type='SSN', backbone=dict(type='OpenCLIPBackbone', pretrained='openai'),
               extra=[dict(type='OpenCLIPBackbone')], fusion=dict(type='SSNFusion'))
    assert skip_pretrained_weights(cfg) == 2
    assert cfg['backbone']['load_pretrained'] is False
    assert cfg['extra'][0]['load_pretrained'] is False and 'load_pretrained' not in cfg['fusion']
