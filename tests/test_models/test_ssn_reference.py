"""SSN's forward maths recomputed independently from the equations, compared at 1e-5.

Written from the method description (gates, masked means, type embeddings, one post-norm
transformer layer written out as attention + FFN, the composition head with the dynamic scalar
and the fixed 0.01 residual), reading only the model's *parameters*. The CLIP tensors (v, V, t,
T, mask) come from the backbone, whose behaviour is pinned by its own tests. A change to any
equation in ``models/ssn.py`` or ``models/fusion.py`` (L+ and L- swapped, the image gate fed the
wrong text half, lambda and 1 - lambda swapped, padding attended or not, a residual scale)
moves these numbers.
"""
import pytest
import torch

from helpers import TINY_CLIP, tiny_ssn_cfg
from ssn_plugin.registry import MODELS

TEXTS = ['make it red', 'remove the dog and add two cats on the left side of the sofa', 'a',
         'the same but bigger and blue']
ATOL = 1e-5


def linear(x, layer):
    """x W^T + b, written out."""
    return x @ layer.weight.t() + layer.bias


def masked_mean(x, mask):
    weights = mask.float().unsqueeze(-1)
    return (x * weights).sum(1) / weights.sum(1)


def layer_norm(x, norm):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def attention(x, attn, ignore):
    """Multi-head self-attention; ``ignore`` [B, S] is True for keys that are masked out."""
    batch, seq, width = x.shape
    heads = attn.num_heads
    q, k, v = (x @ attn.in_proj_weight.t() + attn.in_proj_bias).split(width, dim=-1)

    def split(y):
        return y.reshape(batch, seq, heads, width // heads).transpose(1, 2)

    scores = split(q) @ split(k).transpose(-1, -2) / (width // heads) ** 0.5
    if ignore is not None:
        scores = scores.masked_fill(ignore[:, None, None, :], float('-inf'))
    out = (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(batch, seq, width)
    return linear(out, attn.out_proj)


def fuse(x, fusion, ignore):
    """Post-norm encoder layers (ReLU FFN), eval mode: dropout is the identity."""
    for layer in fusion.encoder.layers:
        x = layer_norm(x + attention(x, layer.self_attn, ignore), layer.norm1)
        ffn = linear(torch.relu(linear(x, layer.linear1)), layer.linear2)
        x = layer_norm(x + ffn, layer.norm2)
    return x


def reference_features(model, ref, texts, degradation, padding_mask):
    """(q+, q-, k) from the equations; q- is None without degradation."""
    v, V = model.clip.encode_image(ref)
    t, T, mask = model.clip.encode_text(texts)
    Vp = linear(V, model.image_token_proj)
    assert isinstance(model.text_token_proj, torch.nn.Identity)  # W = C_t in the tiny model
    e_img, e_txt = model.token_type_embeddings.weight
    n_img = Vp.shape[1]

    if degradation:
        g = Vp[:, :1].expand(-1, T.shape[1], -1)
        m_t = torch.sigmoid(linear(torch.cat([T, g], -1), model.text_token_selection))
        L_pos, L_neg = T * m_t, T * (1 - m_t)
        l_neg = masked_mean(L_neg, mask)[:, None].expand(-1, n_img, -1)
        m_v = torch.sigmoid(linear(torch.cat([Vp, l_neg], -1), model.image_token_selection))
        branches = dict(pos=(Vp * m_v, L_pos), neg=(Vp * (1 - m_v), L_neg))
    else:
        branches = dict(pos=(Vp, T))

    ignore = None
    if padding_mask:
        ignore = torch.cat([torch.zeros(len(texts), n_img, dtype=torch.bool), ~mask], 1)

    queries = {}
    for name, (image_part, text_part) in branches.items():
        F = fuse(torch.cat([image_part + e_img, text_part + e_txt], 1), model.fusion, ignore)
        r = torch.cat([masked_mean(F[:, n_img:], mask), F[:, 0]], -1)
        h = torch.relu(linear(r, model.combiner_layer[0]))
        lam = torch.sigmoid(linear(torch.relu(linear(r, model.dynamic_scalar[0])),
                                   model.dynamic_scalar[2]))
        q = 0.01 * linear(h, model.output_layer) + lam * t + (1 - lam) * v
        queries[name] = q / q.norm(dim=-1, keepdim=True)

    assert isinstance(model.target_proj, torch.nn.Identity)  # W = D in the tiny model
    F_t = fuse(Vp + e_img, model.fusion, None)
    k = 0.01 * F_t[:, 0] + v
    return queries['pos'], queries.get('neg'), k / k.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize('degradation', [True, False])
@pytest.mark.parametrize('padding_mask', [True, False])
def test_features_equal_the_equations(degradation, padding_mask):
    torch.manual_seed(0)
    model = MODELS.build(tiny_ssn_cfg(TINY_CLIP, degradation=degradation,
                                      fusion_padding_mask=padding_mask)).eval()
    # Random, non-trivial values for every SSN parameter (biases included), so that no term
    # can hide behind an initial zero or a symmetric initialisation.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not name.startswith('clip.'):
                param.copy_(torch.randn_like(param) * 0.3)
    ref = torch.randn(len(TEXTS), 3, 32, 32)
    with torch.no_grad():
        q_pos, q_neg, k = reference_features(model, ref, TEXTS, degradation, padding_mask)
        assert torch.allclose(model.query_features(ref, TEXTS), q_pos, atol=ATOL)
        assert torch.allclose(model.gallery_features(ref), k, atol=ATOL)
        if degradation:
            assert torch.allclose(model.query_features(ref, TEXTS, branch='neg'), q_neg,
                                  atol=ATOL)
        # The batch contains captions of very different lengths: with the padding mask a
        # query does not depend on its batch-mates, without it (the release) it does.
        alone = model.query_features(ref[2:3], TEXTS[2:3])
        assert torch.allclose(alone[0], q_pos[2], atol=ATOL) == padding_mask
