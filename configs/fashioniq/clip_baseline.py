# The CLIP "image + text" baseline on Fashion-IQ: the normalised sum of CLIP's image and text
# embeddings, against the gallery's image embeddings.
# Zero-shot: python tools/test.py configs/fashioniq/clip_baseline.py --no-checkpoint
# Fine-tuned with SSN's InfoNCE and the Fashion-IQ recipe (vision tower frozen from epoch 1;
# everything but the model is configs/fashioniq/ssn.py's; tests/test_configs.py pins that):
#   python tools/train.py configs/fashioniq/clip_baseline.py
# mode='text' / 'image': text-only / image-only baselines (--cfg-options model.mode=text);
# model.combine=raw: CLIP4Cir's sum of the raw embeddings.
_base_ = ['./ssn.py']

# A different model, so the whole dict is replaced.
model = dict(
    _delete_=True,
    type='CLIPBaseline',
    backbone=dict(
        type='OpenCLIPBackbone',
        arch='ViT-B-32',
        pretrained='openai',  # an open_clip tag (downloaded once) or a local file
        train_vision=True,
        train_text=True,
        # While FreezeVisionTowerHook keeps the image tower frozen (epoch 1 on), each image's
        # tower outputs are computed once and reused (fp16, on the GPU).
        feature_cache=True),
    mode='sum',
    # normalize(normalize(v) + normalize(t)); combine='raw' is CLIP4Cir's zero-shot sum,
    # normalize(v + t) of the raw embeddings (ssn_plugin/models/clip_baseline.py).
    combine='normalized',
    # The contrastive term only: the baseline has no second branch, hence no KL term.
    loss=dict(type='SSNLoss', logit_scale=100.0, gather=True),
    data_preprocessor=dict(type='CIRDataPreprocessor'),
)
