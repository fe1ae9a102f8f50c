"""The frozen image tower's feature cache: same outputs within tolerance, reused while frozen,
emptied when the tower's weights may change."""
import copy

import pytest
import torch
from mmengine.structures import BaseDataElement

from helpers import tiny_ssn_cfg
from ssn_plugin.registry import MODELS

TEXTS = ['make it red', 'remove the dog', 'add a cat on the left', 'same but bigger']
# fp16 storage of v and V, measured on this tiny model over 5 random batches: the L2-normalised
# features differ by at most 9.4e-5, the InfoNCE (logit scale 100) by at most 1.6e-3 (0.07 %
# relative). The bounds leave a margin of 3 to 5.
FEATURE_ATOL = 5e-4
LOSS_RTOL = 2e-3


def build(clip_file, cache=True):
    torch.manual_seed(0)
    cfg = tiny_ssn_cfg(clip_file)
    cfg['backbone']['feature_cache'] = cache
    model = MODELS.build(cfg).eval()  # no dropout: identical forward passes
    model.clip.set_trainable(vision=False)  # the Fashion-IQ recipe from epoch 1
    return model


def batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    inputs = dict(ref_img=torch.randn(4, 3, 32, 32, generator=gen),
                  tgt_img=torch.randn(4, 3, 32, 32, generator=gen))
    samples = [BaseDataElement(text=t, ref_img_path=f'r{i}.png', tgt_img_path=f't{i}.png')
               for i, t in enumerate(TEXTS)]
    return inputs, samples


def test_outputs_and_gradients_match_within_tolerance(tiny_clip_file):
    cached, plain = build(tiny_clip_file), build(tiny_clip_file, cache=False)
    inputs, samples = batch()
    reference = plain.loss(inputs, samples)
    sum(v for k, v in reference.items() if 'loss' in k).backward()
    for attempt in ('miss', 'hit'):
        cached.zero_grad()
        losses = cached.loss(inputs, samples)
        sum(v for k, v in losses.items() if 'loss' in k).backward()
        for key in ('loss_con', 'loss_kl'):
            assert losses[key].item() == pytest.approx(reference[key].item(), rel=LOSS_RTOL,
                                                      abs=1e-5)
        grad, ref_grad = cached.fusion_grad(), plain.fusion_grad()
        assert torch.allclose(grad, ref_grad, atol=1e-3, rtol=1e-2), attempt
    assert cached.clip.feature_cache.hits == 8 and cached.clip.feature_cache.misses == 8
    with torch.no_grad():
        for key, image_keys in (('ref_img', [f'r{i}.png' for i in range(4)]), ):
            a = cached.query_features(inputs[key], TEXTS, image_keys=image_keys)
            b = plain.query_features(inputs[key], TEXTS)
            assert (a - b).abs().max() < FEATURE_ATOL
        a = cached.gallery_features(inputs['tgt_img'], [f't{i}.png' for i in range(4)])
        assert (a - plain.gallery_features(inputs['tgt_img'])).abs().max() < FEATURE_ATOL


def _fusion_grad(self):
    return torch.cat([p.grad.flatten() for p in self.fusion.parameters()])


@pytest.fixture(autouse=True)
def _grad_helper(monkeypatch):
    from ssn_plugin.models import SSN
    monkeypatch.setattr(SSN, 'fusion_grad', _fusion_grad, raising=False)


def test_a_trainable_tower_is_never_cached(tiny_clip_file):
    model = build(tiny_clip_file)
    model.clip.set_trainable(vision=True)
    model.loss(*batch())
    assert len(model.clip.feature_cache) == 0


def test_unfreezing_or_loading_weights_empties_it(tiny_clip_file):
    model = build(tiny_clip_file)
    model.loss(*batch())
    assert len(model.clip.feature_cache) == 8
    model.clip.set_trainable(vision=True)
    assert len(model.clip.feature_cache) == 0
    model.clip.set_trainable(vision=False)
    model.loss(*batch())
    other = copy.deepcopy(model.state_dict())
    model.load_state_dict(other)  # as a checkpoint load or a resume does
    assert len(model.clip.feature_cache) == 0


def test_evaluation_reuses_training_features_and_skips_unknown_images(tiny_clip_file):
    model = build(tiny_clip_file)
    inputs, samples = batch()
    model.loss(inputs, samples)
    gallery = [BaseDataElement(img_path=f't{i}.png') for i in range(4)]
    model({'img': inputs['tgt_img']}, gallery, mode='predict')
    assert model.clip.feature_cache.hits == 4  # the targets are the gallery images
    uploads = [BaseDataElement(text=t) for t in TEXTS]  # no file path: not cached
    model({'ref_img': torch.randn(4, 3, 32, 32)}, uploads, mode='predict')
    assert len(model.clip.feature_cache) == 8


def test_host_memory_storage(tiny_clip_file):
    torch.manual_seed(0)
    cfg = tiny_ssn_cfg(tiny_clip_file)
    cfg['backbone']['feature_cache'] = 'cpu'
    model = MODELS.build(cfg).eval()
    model.clip.set_trainable(vision=False)
    model.loss(*batch())
    assert {v.device.type for pair in model.clip.feature_cache.entries.values()
            for v in pair} == {'cpu'}
    assert all(v.dtype == torch.float16 for v in model.clip.feature_cache.entries[
        'r0.png'])
    cfg['backbone']['feature_cache'] = 'gpu'
    with pytest.raises(ValueError, match="feature_cache must be False, True or 'cpu'"):
        MODELS.build(cfg)


def test_under_autocast(tiny_clip_file):
    """Mixed precision (bf16 autocast here, as AMP on a GPU): cached features come back in the
    autocast type and the loss stays close to the uncached one."""
    cached, plain = build(tiny_clip_file), build(tiny_clip_file, cache=False)
    inputs, samples = batch()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        reference = plain.loss(inputs, samples)
        first = cached.loss(inputs, samples)  # computes and stores
        again = cached.loss(inputs, samples)  # all from the cache
        pooled, tokens = cached.clip.encode_image(inputs['ref_img'],
                                                  [f'r{i}.png' for i in range(4)])
    assert pooled.dtype == tokens.dtype == torch.bfloat16
    assert cached.clip.feature_cache.hits == 8 + 4
    for losses in (first, again):
        # bf16 itself moves the loss by about 1 %; the cache adds no more than that.
        assert losses['loss_con'].item() == pytest.approx(reference['loss_con'].item(), rel=2e-2)
