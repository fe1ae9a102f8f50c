# Cross-dataset evaluation (as CoVR reports): SSN trained on CIRR (the model and training set-up
# of configs/cirr/ssn.py), evaluated on CIRCO val or exported for the CIRCO test server:
#   python tools/test.py configs/circo/ssn_cirr_trained.py work_dirs/ssn/best_cirr_Avg_epoch_N.pth
#   python tools/test.py configs/circo/ssn_cirr_trained.py CKPT --split test --export-dir out/
# Training with this config trains on CIRR and validates (and keeps the best) on CIRCO val.
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
    loss=dict(type='SSNLoss', logit_scale=100.0, kl_weight=0.1, gather=True),
    hidden_dim=None,
    projection_dim=None,
    fusion_padding_mask=True,
    degradation=True,
    data_preprocessor=dict(type='CIRDataPreprocessor'),
)

optim_wrapper = dict(type='AmpOptimWrapper')

# CIRCO val replaces CIRR val (same keys as the CIRR dataset dict of the base, all overridden).
circo_query_pipeline = [
    dict(type='LoadCIRImages', keys=('ref_img', )),
    dict(type='CLIPResizeCrop', keys=('ref_img', )),
    dict(type='PackCIRInputs', keys=('ref_img', )),
]
circo_gallery_pipeline = [
    dict(type='LoadCIRImages', keys=('img', )),
    dict(type='CLIPResizeCrop', keys=('img', )),
    dict(type='PackCIRInputs', keys=('img', )),
]
val_dataloader = dict(
    dataset=dict(type='CIRCO', data_root='data/CIRCO', split='val',
                 text_template='{relative_caption}', pipeline=circo_query_pipeline,
                 gallery_pipeline=circo_gallery_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='CIRCOMetric')
test_evaluator = val_evaluator

default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3,
                    save_best='circo/mAP@10', rule='greater'))
