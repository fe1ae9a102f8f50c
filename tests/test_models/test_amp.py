"""Mixed precision: the model under autocast (bf16 on CPU, the code path fp16 takes on a GPU),
and mmengine's AmpOptimWrapper driving real training steps.

AmpOptimWrapper refuses to be built without a GPU (an assertion on ``is_cuda_available``); the
closest path on CPU is the same wrapper with that check answered True: its GradScaler then
disables itself (as torch's does without CUDA) and ``optim_context`` runs the model under
``torch.autocast('cpu', bfloat16)``. Everything else is the wrapper's real code.
"""
import os.path as osp
import sys

import pytest
import torch
import torch.nn.functional as F
from mmengine.structures import BaseDataElement

from helpers import PROJECT_ROOT, TINY_CLIP, make_tiny_cirr, tiny_ssn_cfg
from ssn_plugin.models.losses import SSNLoss, scaled_logits
from ssn_plugin.registry import MODELS

TEXTS = ['make it red', 'remove the dog and add two cats on the left', 'a', 'same but bigger']
# Measured on the tiny model: max |fp32 - bf16| 0.003, min cosine 0.99996.
FEATURE_ATOL = 1e-2
MIN_COSINE = 0.999


def cpu_autocast_dtype():
    """The CPU autocast dtype in force, None when off (API names differ across torch)."""
    if hasattr(torch, 'get_autocast_dtype'):
        on, dtype = torch.is_autocast_enabled('cpu'), torch.get_autocast_dtype('cpu')
    else:
        on, dtype = torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
    return dtype if on else None


@pytest.fixture
def model_and_batch():
    torch.manual_seed(0)
    model = MODELS.build(tiny_ssn_cfg(TINY_CLIP))
    return model, torch.randn(len(TEXTS), 3, 32, 32), torch.randn(len(TEXTS), 3, 32, 32)


def test_features_under_bf16_autocast_match_fp32(model_and_batch):
    model, ref, _ = model_and_batch
    model.eval()
    with torch.no_grad():
        query32, gallery32 = model.query_features(ref, TEXTS), model.gallery_features(ref)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            query16, gallery16 = model.query_features(ref, TEXTS), model.gallery_features(ref)
            fused = model.fusion(model.image_token_proj(model.clip.encode_image(ref)[1]))
    assert fused.dtype == torch.bfloat16  # autocast is really on inside the model
    for fp32, mixed in ((query32, query16), (gallery32, gallery16)):
        assert mixed.dtype == torch.float32  # the composition sum and the norm stay fp32
        assert (fp32 - mixed).abs().max() < FEATURE_ATOL
        assert F.cosine_similarity(fp32, mixed).min() > MIN_COSINE


def test_loss_under_autocast_is_fp32_and_finite(model_and_batch):
    model, ref, tgt = model_and_batch
    query = F.normalize(torch.randn(4, 32), dim=-1).bfloat16()
    target = F.normalize(torch.randn(4, 32), dim=-1).bfloat16()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        logits = scaled_logits(query, target, 100.0)
        plain = 100.0 * query @ target.t()
        losses = SSNLoss()(query, query.flip(0), target)
    assert plain.dtype == torch.bfloat16  # what autocast does to an unguarded matmul
    assert logits.dtype == torch.float32
    assert torch.equal(logits, 100.0 * query.float() @ target.float().t())
    reference = SSNLoss()(query.float(), query.flip(0).float(), target.float())
    for key, value in losses.items():
        assert value.dtype == torch.float32 and torch.isfinite(value), key
        assert torch.allclose(value, reference[key]), key

    with torch.autocast('cpu', dtype=torch.bfloat16):
        losses = model(dict(ref_img=ref, tgt_img=tgt),
                       [BaseDataElement(metainfo=dict(text=t)) for t in TEXTS], mode='loss')
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    assert torch.isfinite(total) and total.dtype == torch.float32
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_amp_optim_wrapper_trains_with_bf16(tmp_path, monkeypatch, tiny_clip_file):
    from mmengine.optim.optimizer import amp_optimizer_wrapper
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available', lambda: True)
    sys.path.insert(0, osp.join(PROJECT_ROOT, 'tools'))
    import train as train_tool
    sys.path.insert(0, osp.join(PROJECT_ROOT, 'tests'))
    from helpers import write_tiny_config

    seen = []
    original = SSNLoss.forward

    def recording_forward(self, *args):
        seen.append(cpu_autocast_dtype())
        losses = original(self, *args)
        assert all(torch.isfinite(v) for v in losses.values())
        return losses

    monkeypatch.setattr(SSNLoss, 'forward', recording_forward)
    data_root = str(tmp_path / 'cirr_dataset')
    make_tiny_cirr(data_root, num_images=12, num_train=8, num_val=4)
    config = write_tiny_config(tmp_path, data_root, tiny_clip_file, max_epochs=1)
    work_dir = str(tmp_path / 'work')
    train_tool.main([config, '--work-dir', work_dir, '--amp', '--no-validate',
                     '--cfg-options', 'optim_wrapper.dtype=bfloat16'])
    assert seen == [torch.bfloat16] * 2  # 8 triplets, batch 4: both steps ran under bf16 autocast
    state = torch.load(osp.join(work_dir, 'epoch_1.pth'), map_location='cpu',
                       weights_only=False)
    assert 'loss_scaler' in state['optimizer']  # written by AmpOptimWrapper.state_dict
