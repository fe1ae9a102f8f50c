"""CLIPBaseline: CLIP's own embeddings, composed by a normalised sum, on SSN's paths."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.structures import BaseDataElement

from helpers import TINY_CLIP
from ssn_plugin.models.losses import symmetric_info_nce
from ssn_plugin.registry import MODELS

TEXTS = ['make it red', 'remove the dog and add a cat', 'same']


def build(arch, mode='sum'):
    torch.manual_seed(0)
    return MODELS.build(dict(type='CLIPBaseline', mode=mode, backbone=dict(
        type='OpenCLIPBackbone', arch=arch, pretrained=None))).eval()


def open_clip_embeddings(model, images, texts):
    """What open_clip itself computes: CLIP's normalised image and text embeddings."""
    clip = model.clip.model
    tokens = model.clip.tokenizer(texts)
    return (F.normalize(clip.encode_image(images), dim=-1),
            F.normalize(clip.encode_text(tokens), dim=-1))


@pytest.mark.parametrize('mode', ['sum', 'text', 'image'])
def test_queries_are_clip_embeddings_composed(tiny_clip_file, mode):
    model = build(tiny_clip_file, mode)
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        image, text = open_clip_embeddings(model, images, TEXTS)
        query = model.query_features(images, TEXTS)
        gallery = model.gallery_features(images)
    expected = {'sum': F.normalize(image + text, dim=-1), 'text': text, 'image': image}[mode]
    assert torch.allclose(query, expected, atol=1e-5)
    assert torch.allclose(gallery, image, atol=1e-5)


def test_loss_is_the_infonce_and_trains(tiny_clip_file):
    model = build(tiny_clip_file).train()
    inputs = dict(ref_img=torch.randn(3, 3, 32, 32), tgt_img=torch.randn(3, 3, 32, 32))
    samples = [BaseDataElement(text=t) for t in TEXTS]
    losses = model(inputs, samples, mode='loss')
    assert set(losses) == {'loss_con'}  # no second branch, no KL term
    with torch.no_grad():
        query = model.query_features(inputs['ref_img'], TEXTS)
        target = model.gallery_features(inputs['tgt_img'])
    assert losses['loss_con'].item() == pytest.approx(
        symmetric_info_nce(100.0 * query @ target.t()).item(), rel=1e-5)
    losses['loss_con'].backward()
    assert model.clip.model.visual.conv1.weight.grad.abs().sum() > 0
    assert model.clip.model.token_embedding.weight.grad.abs().sum() > 0


def test_predict_fills_the_metric_fields(tiny_clip_file):
    model = build(tiny_clip_file)
    samples = model({'ref_img': torch.randn(2, 3, 32, 32)},
                    [BaseDataElement(text=t) for t in TEXTS[:2]], mode='predict')
    assert samples[0].query_feat.shape == (32, )
    samples = model({'img': torch.randn(2, 3, 32, 32)}, [BaseDataElement()] * 2, mode='predict')
    assert samples[1].gallery_feat.norm().item() == pytest.approx(1.0, abs=1e-5)


def test_unknown_mode_is_refused(tiny_clip_file):
    with pytest.raises(ValueError, match="mode 'concat'"):
        build(tiny_clip_file, 'concat')

# ---------------------------------------------------------------- the two sums
def build_combine(combine):
    torch.manual_seed(0)
    return MODELS.build(dict(type='CLIPBaseline', combine=combine,
                             backbone=dict(type='OpenCLIPBackbone', arch=TINY_CLIP)))


def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def test_raw_and_normalized_sums_follow_their_definitions():
    images = torch.randn(3, 3, 32, 32)
    texts = ['make it red', 'remove the dog and add a tall red tower', 'x']
    raw_model, norm_model = build_combine('raw'), build_combine('normalized')
    for a, b in zip(raw_model.state_dict().values(), norm_model.state_dict().values()):
        assert torch.equal(a, b)  # the same weights: only the sum differs
    with torch.no_grad():
        v = raw_model.clip.encode_image(images)[0].float()
        t = raw_model.clip.encode_text(texts)[0].float()
        raw = raw_model.query_features(images, texts)
        normalized = norm_model.query_features(images, texts)
    # CLIP4Cir's zero-shot sum: normalize(v + t) of the raw embeddings.
    assert torch.allclose(raw, unit(v + t), atol=1e-6)
    # Equal weight: normalize(normalize(v) + normalize(t)).
    assert torch.allclose(normalized, unit(unit(v) + unit(t)), atol=1e-6)
    # The embeddings differ in length, so the two sums are different queries.
    assert (v.norm(dim=-1) - t.norm(dim=-1)).abs().min() > 1e-3
    assert (raw - normalized).abs().max() > 1e-3
    with torch.no_grad():  # the gallery side is the normalised image embedding for both
        assert torch.allclose(raw_model.gallery_features(images), unit(v), atol=1e-6)


def test_an_unknown_combine_is_named():
    with pytest.raises(ValueError, match=r"combine 'mean': expected one of \('normalized', "
                                         r"'raw'\)"):
        build_combine('mean')
