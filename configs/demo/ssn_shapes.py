# The embedded quick start: SSN trained from scratch on the generated shapes dataset, on CPU,
# in minutes. A tiny open_clip model (random init, no download), the real CIRR dataset class,
# transforms, metric and export. The data root is generated on first use if absent.
#   python tools/train.py configs/demo/ssn_shapes.py
_base_ = ['../_base_/default_runtime.py']

data_root = 'data/shapes_demo'
generator = dict(seed=0, num_train_sets=3000, num_val_sets=500, queries_per_set=2,
                 image_size=64)

model = dict(
    type='SSN',
    backbone=dict(
        type='OpenCLIPBackbone',
        # 64 px images in 8 px patches: 65 image tokens.
        arch=dict(
            embed_dim=64,
            vision_cfg=dict(image_size=64, layers=2, width=64, patch_size=8, head_width=32),
            text_cfg=dict(context_length=32, vocab_size=49408, width=64, heads=2, layers=2)),
        pretrained=None,
        train_vision=True,
        train_text=True),
    fusion=dict(type='SSNFusion', num_layers=1, num_heads=4, ffn_dim=128, dropout=0.1),
    loss=dict(type='SSNLoss', logit_scale=100.0, kl_weight=0.1),
    hidden_dim=None,
    projection_dim=None,
    fusion_padding_mask=True,
    degradation=True,  # False = the ablation without the decomposition
    data_preprocessor=dict(type='CIRDataPreprocessor'),
)

train_pipeline = [
    dict(type='LoadCIRImages', keys=('ref_img', 'tgt_img')),
    dict(type='PackCIRInputs', keys=('ref_img', 'tgt_img')),
]
# The generated images are already 64 px, so the evaluation pipelines' resize (to the model's
# size) changes none of them; it is there for photos of any size given to tools/retrieve.py or
# uploaded on the web page.
query_pipeline = [
    dict(type='LoadCIRImages', keys=('ref_img', )),
    dict(type='CLIPResizeCrop', keys=('ref_img', )),
    dict(type='PackCIRInputs', keys=('ref_img', )),
]
gallery_pipeline = [
    dict(type='LoadCIRImages', keys=('img', )),
    dict(type='CLIPResizeCrop', keys=('img', )),
    dict(type='PackCIRInputs', keys=('img', )),
]
train_dataloader = dict(
    batch_size=128,
    # 2 workers, as in the README's results table. On 2 cores loading in the main process is
    # faster (num_workers=0: 22 s against 27 s per epoch + validation, benchmarks/README.md),
    # but it trains differently: workers draw their seeds from the main process's random
    # stream, which then gives dropout other numbers.
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='pseudo_collate'),
    drop_last=True,
    dataset=dict(type='ShapesCIRR', data_root=data_root, split='train', generator=generator,
                 pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=256,
    # 2 workers, as in the README's results table. On 2 cores loading in the main process is
    # faster (num_workers=0: 22 s against 27 s per epoch + validation, benchmarks/README.md),
    # but it trains differently: workers draw their seeds from the main process's random
    # stream, which then gives dropout other numbers.
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(type='ShapesCIRR', data_root=data_root, split='val', generator=generator,
                 group_key='instruction_type', pipeline=query_pipeline,
                 gallery_pipeline=gallery_pipeline),
)
val_evaluator = dict(type='CIRRMetric')
test_dataloader = val_dataloader
test_evaluator = val_evaluator

# From scratch, so one learning rate for everything (the release's split is for fine-tuning
# pretrained CLIP), with a short warm-up and cosine decay.
max_epochs = 12
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.01),
                     clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.05, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs,
         eta_min=1e-5),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=4)
auto_scale_lr = dict(enable=False, base_batch_size=128)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='SafeCheckpointHook', interval=4, max_keep_ckpts=1,
                    save_best='cirr/Avg', rule='greater'))
