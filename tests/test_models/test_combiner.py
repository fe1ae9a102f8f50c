"""CLIP4Cir's Combiner against its equations, written out on randomised parameters, and its
query -> target cross-entropy."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.structures import BaseDataElement

from helpers import TINY_CLIP
from ssn_plugin.registry import MODELS

TEXTS = ['make it red', 'remove the dog and add a tall red tower', 'x', 'same but blue']


def build(**kwargs):
    torch.manual_seed(0)
    model = MODELS.build(dict(type='Combiner', backbone=dict(type='OpenCLIPBackbone',
                                                             arch=TINY_CLIP), **kwargs))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # randomise every combiner parameter (biases too)
        for layer in model.combiner.values():
            fan_in = layer.weight.shape[1]
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator)
                               / math.sqrt(fan_in))
            layer.bias.copy_(0.1 * torch.randn(layer.bias.shape, generator=generator))
    return model


def linear(x, layer):
    return x @ layer.weight.t() + layer.bias


def test_combiner_follows_its_equations():
    model = build().eval()
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        v = model.clip.encode_image(images)[0].float()  # raw CLIP embeddings
        t = model.clip.encode_text(TEXTS)[0].float()
        got = model.query_features(images, TEXTS)
    c = model.combiner
    p_t = torch.clamp(linear(t, c['text_projection']), min=0)
    p_v = torch.clamp(linear(v, c['image_projection']), min=0)
    joint = torch.cat([p_t, p_v], dim=1)
    h = torch.clamp(linear(joint, c['combiner_layer']), min=0)
    lam = 1 / (1 + torch.exp(-linear(torch.clamp(linear(joint, c['scalar_hidden']), min=0),
                                     c['scalar_out'])))
    out = linear(h, c['output_layer']) + lam * t + (1 - lam) * v
    expected = out / out.norm(dim=1, keepdim=True)
    assert torch.allclose(got, expected, atol=1e-5)
    assert ((lam > 0.01) & (lam < 0.99)).all()  # the scalar mixes, it is not saturated
    with torch.no_grad():
        assert torch.allclose(model.gallery_features(images), v / v.norm(dim=1, keepdim=True),
                              atol=1e-6)


def test_widths_default_to_4x_and_8x_the_embedding():
    model = build()
    d = model.clip.embed_dim
    assert model.combiner['text_projection'].out_features == 4 * d
    assert model.combiner['combiner_layer'].out_features == 8 * d
    assert model.combiner['output_layer'].out_features == d
    assert build(projection_dim=7, hidden_dim=5).combiner['scalar_out'].in_features == 5


def test_dropout_is_half_and_only_in_training():
    model = build()
    assert model.dropout.p == 0.5
    images = torch.randn(4, 3, 32, 32)
    model.train()
    assert not model.clip.training  # CLIP is frozen: it stays in eval mode
    torch.manual_seed(2)
    a = model.query_features(images, TEXTS)
    torch.manual_seed(3)
    b = model.query_features(images, TEXTS)
    assert (a - b).abs().max() > 1e-3
    model.eval()
    assert torch.equal(model.query_features(images, TEXTS), model.query_features(images, TEXTS))


def test_loss_is_query_to_target_cross_entropy_and_trains_only_the_combiner():
    model = build(dropout=0.0).train()
    ref, tgt = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    samples = [BaseDataElement(text=t) for t in TEXTS]
    losses = model.loss(dict(ref_img=ref, tgt_img=tgt), samples)
    with torch.no_grad():
        q = model.query_features(ref, TEXTS)
        k = model.gallery_features(tgt)
    logits = 100.0 * q @ k.t()
    # -log softmax of each query's own target, averaged; no target -> query term.
    expected = sum(-(logits[i, i] - torch.logsumexp(logits[i], 0)) for i in range(4)) / 4
    assert losses['loss_ce'].item() == pytest.approx(expected.item(), rel=1e-5)
    losses['loss_ce'].backward()
    assert all(p.grad is None for p in model.clip.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in model.combiner.parameters())
    assert not math.isnan(losses['loss_ce'].item())


def test_the_exported_token_path_equals_the_text_path():
    model = build().eval()
    images = torch.randn(4, 3, 32, 32)
    tokens, _ = model.clip.tokenize(TEXTS)
    with torch.no_grad():
        assert torch.allclose(model.query_features_from_tokens(images, tokens),
                              model.query_features(images, TEXTS), atol=1e-5)


def test_query_to_target_loss_alone():
    loss = MODELS.build(dict(type='QueryToTargetCELoss', logit_scale=10.0))
    q = F.normalize(torch.randn(3, 8), dim=-1)
    k = F.normalize(torch.randn(3, 8), dim=-1)
    logits = 10.0 * q @ k.t()
    assert loss(q, None, k)['loss_ce'].item() == pytest.approx(
        F.cross_entropy(logits, torch.arange(3)).item(), rel=1e-6)
    # Not symmetric: swapping queries and targets gives another value.
    assert loss(k, None, q)['loss_ce'].item() != pytest.approx(
        loss(q, None, k)['loss_ce'].item(), rel=1e-6)
