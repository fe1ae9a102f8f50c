"""SSN model: shapes, gradients, padding independence, eval branch, losses, lr groups."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.optim import build_optim_wrapper
from mmengine.structures import BaseDataElement

import ssn_plugin.models  # noqa: F401
from helpers import TINY_CLIP, tiny_ssn_cfg
from ssn_plugin.models import SSNFusion, SSNLoss
from ssn_plugin.models.losses import kl_mean, ssn_kl_term, symmetric_info_nce
from ssn_plugin.models.ssn import masked_mean
from ssn_plugin.registry import MODELS

DEFAULT_ARGS = tiny_ssn_cfg(TINY_CLIP)
CAPTIONS = ['make it red', 'remove the dog and add two small cats on the left side', ' ']


def build(**kwargs):
    torch.manual_seed(0)
    return MODELS.build({**DEFAULT_ARGS, **kwargs})


def batch(model, n=3, size=32, training=False, captions=CAPTIONS):
    g = torch.Generator().manual_seed(1)
    images = lambda: [torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g)
                      for _ in range(n)]  # noqa: E731
    samples = [BaseDataElement(metainfo=dict(text=captions[i % len(captions)]))
               for i in range(n)]
    data = dict(inputs=dict(ref_img=images(), tgt_img=images()), data_samples=samples)
    return model.data_preprocessor(data, training)


def test_shapes_read_from_backbone():
    model = build()
    assert model.width == TINY_CLIP['text_cfg']['width']
    assert model.clip.num_image_tokens == 1 + (32 // 8) ** 2
    data = batch(model)
    model.eval()
    query = model(data['inputs'], data['data_samples'], mode='tensor')
    assert query.shape == (3, TINY_CLIP['embed_dim'])
    assert torch.allclose(query.norm(dim=-1), torch.ones(3), atol=1e-5)
    gallery = model(dict(img=data['inputs']['tgt_img']), mode='tensor')
    assert gallery.shape == (3, TINY_CLIP['embed_dim'])


def test_vit_b32_shaped_model_shapes():
    """The release's backbone (random init): 50 image tokens of width 768, W = D = 512."""
    model = MODELS.build(dict(type='SSN', backbone=dict(type='OpenCLIPBackbone',
                                                          arch='ViT-B-32', pretrained=None)))
    assert model.clip.num_image_tokens == 50
    assert model.clip.vision_width == 768
    assert model.width == 512 and model.clip.embed_dim == 512
    assert model.image_token_proj.in_features == 768
    assert model.combiner_layer[0].out_features == 1024  # H = 2P = 2W
    assert isinstance(model.text_token_proj, torch.nn.Identity)
    assert isinstance(model.target_proj, torch.nn.Identity)
    model.eval()
    with torch.no_grad():
        images = torch.randn(2, 3, 224, 224)
        query = model.query_features(images, ['a dog', 'no dog'])
        _, tokens = model.clip.encode_image(images)
    assert query.shape == (2, 512) and tokens.shape == (2, 50, 768)


def test_other_widths_get_projections():
    """A backbone whose text width differs from W and D still composes (release: crash)."""
    arch = dict(TINY_CLIP, text_cfg=dict(TINY_CLIP['text_cfg'], width=48))
    model = build(backbone=dict(type='OpenCLIPBackbone', arch=arch), hidden_dim=40,
                  projection_dim=24)
    assert model.text_token_proj.in_features == 48
    assert model.target_proj.out_features == TINY_CLIP['embed_dim']
    assert model.combiner_layer[0].out_features == 48
    data = batch(model)
    losses = model(data['inputs'], data['data_samples'], mode='loss')
    assert torch.isfinite(losses['loss_con'])


def test_every_trainable_parameter_gets_a_gradient():
    model = build()
    data = batch(model, training=True)
    losses = model(data['inputs'], data['data_samples'], mode='loss')
    assert set(losses) == {'loss_con', 'loss_kl', 'kl_raw'}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    zero = [n for n, p in model.named_parameters()
            if p.requires_grad and n.startswith(('fusion', 'text_token', 'image_token',
                                                 'combiner', 'dynamic', 'output'))
            and p.grad.abs().sum() == 0]
    assert zero == []
    assert not model.clip.model.logit_scale.requires_grad


def test_frozen_towers_get_no_gradient():
    model = build(backbone=dict(type='OpenCLIPBackbone', arch=TINY_CLIP, train_vision=False))
    data = batch(model, training=True)
    sum(v for k, v in model(data['inputs'], data['data_samples'], mode='loss').items()
        if 'loss' in k).backward()
    assert all(p.grad is None for p in model.clip.vision_parameters())
    assert all(p.grad is not None for p in model.clip.text_parameters())


def test_query_independent_of_batch_padding_when_masked():
    model = build()
    model.eval()
    data = batch(model, n=2, captions=['make it red', 'make it red'])
    ref = data['inputs']['ref_img']
    with torch.no_grad():
        alone = model.query_features(ref[:1], ['make it red'])
        padded = model.query_features(
            ref, ['make it red', 'a very long caption that forces a lot of padding onto '
                  'the short caption of the first query in this batch'])
    assert torch.allclose(alone[0], padded[0], atol=1e-5)

    release = build(fusion_padding_mask=False)
    release.eval()
    with torch.no_grad():
        alone = release.query_features(ref[:1], ['make it red'])
        padded = release.query_features(
            ref, ['make it red', 'a very long caption that forces a lot of padding onto '
                  'the short caption of the first query in this batch'])
    # The release attends to padding: the same query changes with its batch.
    assert not torch.allclose(alone[0], padded[0], atol=1e-4)


def test_batch_size_one():
    model = build()
    model.eval()
    data = batch(model, n=1)
    with torch.no_grad():
        out = model(data['inputs'], data['data_samples'], mode='predict')
    assert out[0].query_feat.shape == (TINY_CLIP['embed_dim'], )
    model.train()
    losses = model(data['inputs'], data['data_samples'], mode='loss')
    assert losses['loss_con'].item() == pytest.approx(0.0, abs=1e-6)  # one in-batch target


def test_eval_branch_is_the_main_branch():
    model = build()
    model.eval()
    data = batch(model)
    texts = [s.text for s in data['data_samples']]
    with torch.no_grad():
        pos, neg = model._queries(data['inputs']['ref_img'], texts)
        predicted = model(data['inputs'], data['data_samples'], mode='predict')
    got = torch.stack([s.query_feat for s in predicted])
    assert torch.allclose(got, pos, atol=1e-6)
    assert not torch.allclose(got, neg, atol=1e-3)


def test_unknown_mode_lists_valid_modes():
    model = build()
    with pytest.raises(ValueError, match='"loss", "predict" or "tensor"'):
        model({}, None, mode='train')


def test_degradation_off_passes_everything_and_skips_kl():
    model = build(degradation=False)
    data = batch(model)
    losses = model(data['inputs'], data['data_samples'], mode='loss')
    assert set(losses) == {'loss_con'}
    tokens = torch.randn(2, 5, model.width)
    img, rest, pos, neg = model._degrade(tokens, tokens, torch.ones(2, 5, dtype=torch.bool))
    assert torch.equal(img, tokens) and torch.equal(pos, tokens)
    assert rest.abs().sum() == 0 and neg.abs().sum() == 0


def test_losses_match_their_definitions():
    torch.manual_seed(0)
    q_pos = F.normalize(torch.randn(4, 8), dim=-1)
    q_neg = F.normalize(torch.randn(4, 8), dim=-1)
    k = F.normalize(torch.randn(4, 8), dim=-1)
    logits = 100 * q_pos @ k.t()
    expected = 0.5 * (F.cross_entropy(logits, torch.arange(4))
                      + F.cross_entropy(logits.t(), torch.arange(4)))
    assert symmetric_info_nce(logits).item() == pytest.approx(expected.item(), rel=1e-6)
    # KLDivLoss(reduction='mean') as the release: divide by B*B, not B.
    p = torch.softmax(torch.randn(4, 4), 1)
    log_q = torch.log_softmax(torch.randn(4, 4), 1)
    assert kl_mean(p.log(), log_q).item() == pytest.approx(
        torch.nn.KLDivLoss()(log_q, p).item(), rel=1e-6)
    # First KL term ~ CE / B (P_I is one-hot up to e^-100).
    logits_neg = 100 * q_neg @ k.t()
    kl = ssn_kl_term(logits, logits_neg, 100.0)
    first = F.cross_entropy(logits, torch.arange(4)).item() / 4
    p_pos = torch.softmax(logits, 1)
    second = (p_pos * (torch.log_softmax(logits, 1) - torch.log_softmax(logits_neg, 1))).sum()
    assert kl.item() == pytest.approx(first - second.item() / 16, rel=1e-4, abs=1e-5)
    loss = MODELS.build(dict(type='SSNLoss', kl_weight=0.5))(q_pos, q_neg, k)
    assert loss['loss_kl'].item() == pytest.approx(0.5 * kl.item(), rel=1e-5)
    assert loss['loss_con'].item() == pytest.approx(expected.item(), rel=1e-5)


def test_lr_groups_follow_the_release_split():
    model = build()
    custom_keys = {'clip': dict(lr_mult=0.2), 'token_proj': dict(lr_mult=0.4),
                   'token_type': dict(lr_mult=0.8), 'token_selection': dict(lr_mult=0.8),
                   'fusion': dict(lr_mult=0.8)}
    wrapper = build_optim_wrapper(model, dict(
        type='OptimWrapper', optimizer=dict(type='Adam', lr=5e-5),
        paramwise_cfg=dict(custom_keys=custom_keys)))
    lr_of = {}
    for group in wrapper.optimizer.param_groups:
        for p in group['params']:
            lr_of[id(p)] = group['lr']
    expected = {'clip.': 1e-5, 'image_token_proj': 2e-5, 'token_type_embeddings': 4e-5,
                'text_token_selection': 4e-5, 'image_token_selection': 4e-5, 'fusion': 4e-5,
                'combiner_layer': 5e-5, 'dynamic_scalar': 5e-5, 'output_layer': 5e-5}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        prefix = next(k for k in expected if name.startswith(k))
        assert math.isclose(lr_of[id(param)], expected[prefix]), name


def test_kl_term_gradient_stays_finite_when_softmax_underflows():
    """Confident predictions: softmax(100 * cos) has exact zeros off the diagonal."""
    k = F.normalize(torch.randn(6, 16), dim=-1)
    q_pos = k.clone().requires_grad_(True)
    q_neg = F.normalize(torch.randn(6, 16), dim=-1).requires_grad_(True)
    logits_pos, logits_neg = 1000 * q_pos @ k.t(), 100 * q_neg @ k.t()
    assert (torch.softmax(logits_pos, 1) == 0).any()
    kl = ssn_kl_term(logits_pos, logits_neg, 100.0)
    kl.backward()
    assert torch.isfinite(kl)
    assert torch.isfinite(q_pos.grad).all() and torch.isfinite(q_neg.grad).all()


def test_release_defaults_of_fusion_and_loss():
    fusion = SSNFusion(width=64)
    layer = fusion.encoder.layers[0]
    assert len(fusion.encoder.layers) == 1 and layer.self_attn.num_heads == 8
    assert layer.linear1.out_features == 2048 and layer.dropout.p == 0.1
    layer = SSNFusion(width=32, num_layers=2, ffn_dim=64, dropout=0.0).encoder.layers[1]
    assert layer.linear1.out_features == 64 and layer.dropout.p == 0.0
    loss = SSNLoss()
    assert (loss.logit_scale, loss.kl_weight, loss.gather) == (100.0, 0.1, False)


def test_sub_module_configs_are_followed():
    model = build(fusion=dict(type='SSNFusion', num_heads=4, ffn_dim=48),
                  loss=dict(type='SSNLoss', kl_weight=0.5),
                  init_cfg=dict(type='Constant', val=0.0, layer='Linear'))
    layer = model.fusion.encoder.layers[0]
    assert layer.self_attn.num_heads == 4 and layer.linear1.out_features == 48
    assert model.loss_module.kl_weight == 0.5
    assert model.init_cfg == dict(type='Constant', val=0.0, layer='Linear')


def test_default_mode_returns_features_and_predict_names_them():
    model = build().eval()
    data = batch(model)
    samples = data['data_samples']
    with torch.no_grad():
        queries = model({'ref_img': data['inputs']['ref_img']}, samples)
        assert torch.is_tensor(queries) and queries.shape == (3, model.clip.embed_dim)
        gallery = model.predict({'img': data['inputs']['tgt_img']},
                                [BaseDataElement() for _ in range(3)])
    assert all('gallery_feat' in s and 'query_feat' not in s for s in gallery)
    assert torch.allclose(gallery[0].gallery_feat,
                          model.gallery_features(data['inputs']['tgt_img'])[0], atol=1e-6)


def test_masked_mean_counts_real_positions():
    tokens = torch.tensor([[[2.0], [4.0], [9.0]], [[1.0], [3.0], [5.0]]])
    mask = torch.tensor([[True, False, False], [True, True, True]])
    assert masked_mean(tokens, mask).flatten().tolist() == [2.0, 3.0]
    assert masked_mean(tokens, torch.zeros(2, 3, dtype=torch.bool)).flatten().tolist() == [0, 0]
