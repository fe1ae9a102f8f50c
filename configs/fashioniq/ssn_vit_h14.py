# SSN with CLIP ViT-H/14 (LAION-2B weights 'laion2b_s32b_b79k': GELU, read from the tag).
# 224 px, 257 image tokens; C_v 1280, C_t = W 1024, D 1024. Gradient checkpointing is on:
# each CLIP block's activations are recomputed in the backward pass (about a third more
# compute per step) so that a batch of 128 fits one 80 GB GPU. Not in the paper: the batch and
# the learning-rate split are the ViT-B/32 recipe's, untuned.
# Parameters, activation memory and a suggested GPU: README, "Larger backbones".
# Everything else as in configs/fashioniq/ssn.py.
_base_ = [
    '../_base_/datasets/fashioniq.py',
    '../_base_/schedules/fashioniq_ssn.py',
    '../_base_/default_runtime.py',
]

model = dict(
    type='SSN',
    backbone=dict(
        type='OpenCLIPBackbone',
        arch='ViT-H-14',
        pretrained='laion2b_s32b_b79k',  # GELU, read from the tag
        grad_checkpointing=True,
        train_vision=True,
        train_text=True,
        # While FreezeVisionTowerHook keeps the image tower frozen (epoch 1 on), each image's
        # tower outputs are computed once and reused: fp16, in host memory ('cpu'), as the
        # train and val images need about 30-40 GiB at this size.
        feature_cache='cpu'),
    fusion=dict(type='SSNFusion', num_layers=1, num_heads=8, ffn_dim=2048, dropout=0.1),
    # kl_weight: the release never defines it; 0.1 is our choice (see README).
    # gather: with N processes both loss terms see the global batch (N x batch_size), as one
    # process with the whole batch would.
    loss=dict(type='SSNLoss', logit_scale=100.0, kl_weight=0.1, gather=True),
    hidden_dim=None,
    projection_dim=None,
    fusion_padding_mask=True,
    degradation=True,
    data_preprocessor=dict(type='CIRDataPreprocessor'),
)

# Mixed precision (fp16 + dynamic loss scaling), as the release's GradScaler.
optim_wrapper = dict(type='AmpOptimWrapper')

custom_hooks = [
    dict(type='SafeCheckpointLoaderHook'),
    dict(type='EpochSeedHook'),
    dict(type='ImageSizeFromModelHook'),
    dict(type='GalleryFeatureHook'),
    # The release fine-tunes the vision tower in the first epoch only.
    dict(type='FreezeVisionTowerHook', epoch=1),
]
# The frozen vision tower stops receiving gradients in DDP runs.
find_unused_parameters = True

default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3,
                    save_best='fiq/overall', rule='greater'))
