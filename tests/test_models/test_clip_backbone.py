"""The open_clip backbone: shapes read from the model, tokenization, towers."""
import pytest
import torch

from helpers import TINY_CLIP
from ssn_plugin.models import OpenCLIPBackbone


@pytest.mark.parametrize('arch, tokens, vision, text, embed', [
    ('ViT-B-16', 197, 768, 512, 512),
    pytest.param('ViT-L-14', 257, 1024, 768, 768, marks=pytest.mark.slow),
])
def test_other_vits_by_name(arch, tokens, vision, text, embed):
    backbone = OpenCLIPBackbone(arch, pretrained=None)
    assert (backbone.num_image_tokens, backbone.vision_width, backbone.text_width,
            backbone.embed_dim) == (tokens, vision, text, embed)


def test_unknown_arch_and_missing_weights(tmp_path):
    with pytest.raises(ValueError, match="Unknown open_clip architecture 'ViT-X-99'"):
        OpenCLIPBackbone('ViT-X-99')
    with pytest.raises(FileNotFoundError, match='pretrained checkpoint not found'):
        OpenCLIPBackbone(TINY_CLIP, pretrained=str(tmp_path / 'none.pt'))


def test_tokenize_trims_and_truncates():
    backbone = OpenCLIPBackbone(TINY_CLIP)
    tokens, mask = backbone.tokenize(['a red dog', 'word ' * 100, ' '])
    assert tokens.shape == (3, 77)  # the long caption is cut at the context length
    assert mask.sum(dim=1).tolist() == [5, 77, 2]  # BOS + words + EOS; " " is BOS/EOS only
    assert tokens[1, -1] == backbone.eot_token_id
    short, short_mask = backbone.tokenize(['a red dog'])
    assert short.shape == (1, 5) and torch.equal(short[0], tokens[0, :5])


def test_text_features_do_not_depend_on_trimming():
    backbone = OpenCLIPBackbone(TINY_CLIP).eval()
    with torch.no_grad():
        alone, states, _ = backbone.encode_text(['a red dog'])
        padded, padded_states, _ = backbone.encode_text(['a red dog', 'word ' * 30])
    assert torch.allclose(alone[0], padded[0], atol=1e-5)
    assert torch.allclose(states[0], padded_states[0, :5], atol=1e-5)


def test_local_checkpoint_loads(tmp_path):
    torch.manual_seed(3)
    source = OpenCLIPBackbone(TINY_CLIP)
    path = str(tmp_path / 'tiny.pt')
    torch.save(source.model.state_dict(), path)
    loaded = OpenCLIPBackbone(TINY_CLIP, pretrained=path)
    for (name, a), b in zip(source.model.state_dict().items(),
                            loaded.model.state_dict().values()):
        assert torch.equal(a, b), name
