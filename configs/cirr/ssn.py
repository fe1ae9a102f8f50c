# SSN on CIRR: the release's recipe (CLIP ViT-B/32 'openai', batch 128, 50 epochs, AMP).
# AmpOptimWrapper needs a GPU; on CPU add
#   --cfg-options optim_wrapper.type=OptimWrapper
_base_ = [
    '../_base_/datasets/cirr.py',
    '../_base_/schedules/cirr_ssn.py',
    '../_base_/default_runtime.py',
]

model = dict(
    type='SSN',
    backbone=dict(
        type='OpenCLIPBackbone',
        arch='ViT-B-32',
        pretrained='openai',  # an open_clip tag (downloaded once) or a local file
        train_vision=True,
        train_text=True),
    fusion=dict(type='SSNFusion', num_layers=1, num_heads=8, ffn_dim=2048, dropout=0.1),
    # kl_weight: the release never defines it; 0.1 is our choice (see README).
    # gather: with N processes both loss terms see the global batch (N x batch_size), as one
    # process with the whole batch would.
    loss=dict(type='SSNLoss', logit_scale=100.0, kl_weight=0.1, gather=True),
    hidden_dim=None,  # W = text width (512 for ViT-B/32), as the release
    projection_dim=None,  # P = W, as the release's README command
    fusion_padding_mask=True,  # False reproduces the release (padding attended)
    degradation=True,
    data_preprocessor=dict(type='CIRDataPreprocessor'),
)

# Mixed precision (fp16 + dynamic loss scaling), as the release's GradScaler.
optim_wrapper = dict(type='AmpOptimWrapper')

default_hooks = dict(
    checkpoint=dict(type='SafeCheckpointHook', interval=1, max_keep_ckpts=3,
                    save_best='cirr/Avg', rule='greater'))
