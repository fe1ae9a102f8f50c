# The CLIP "image + text" baseline on Fashion-IQ: the normalised sum of CLIP's image and text
# embeddings, against the gallery's image embeddings.
# Zero-shot: python tools/test.py configs/fashioniq/clip_baseline.py --no-checkpoint
# Fine-tuned with SSN's InfoNCE and the Fashion-IQ recipe (vision tower frozen from epoch 1):
#   python tools/train.py configs/fashioniq/clip_baseline.py
# mode='text' / 'image': text-only / image-only baselines (--cfg-options model.mode=text).
_base_ = [
    '../_base_/datasets/fashioniq.py',
    '../_base_/schedules/fashioniq_ssn.py',
    '../_base_/default_runtime.py',
]

model = dict(
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
    # The contrastive term only: the baseline has no second branch, hence no KL term.
    loss=dict(type='SSNLoss', logit_scale=100.0, gather=True),
    data_preprocessor=dict(type='CIRDataPreprocessor'),
)

# Mixed precision (fp16 + dynamic loss scaling). On CPU add
#   --cfg-options optim_wrapper.type=OptimWrapper
optim_wrapper = dict(type='AmpOptimWrapper')

custom_hooks = [
    dict(type='SafeCheckpointLoaderHook'),
    dict(type='EpochSeedHook'),
    dict(type='ImageSizeFromModelHook'),
    dict(type='GalleryFeatureHook'),
    dict(type='FreezeVisionTowerHook', epoch=1),
]
# The frozen vision tower stops receiving gradients in DDP runs.
find_unused_parameters = True

default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3,
                    save_best='fiq/overall', rule='greater'))
