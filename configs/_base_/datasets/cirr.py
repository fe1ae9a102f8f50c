# CIRR rc2 with the SSN release's preprocessing (CLIP resize + center crop).
# For CLIP4Cir's preprocessing put dict(type='TargetPad', target_ratio=1.25) before
# CLIPResizeCrop in both pipelines.
# CLIPResizeCrop without a size takes the model's input resolution (224 px for ViT-B/32,
# 336 px for ViT-L-14-336), filled in by ImageSizeFromModelHook.
dataset_type = 'CIRR'
data_root = 'data/cirr_dataset'

train_pipeline = [
    dict(type='LoadCIRImages', keys=('ref_img', 'tgt_img')),
    dict(type='CLIPResizeCrop', keys=('ref_img', 'tgt_img')),
    dict(type='PackCIRInputs', keys=('ref_img', 'tgt_img')),
]
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
    # Per process. The release's global batch is 128: on N GPUs use batch_size=128 // N
    # (1 GPU: 128, 4: 32, 8: 16), or keep 128 and add --auto-scale-lr (global N x 128).
    batch_size=128,
    num_workers=4,
    persistent_workers=True,
    pin_memory=True,  # page-locked batches copy to the GPU faster
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='pseudo_collate'),
    drop_last=True,
    dataset=dict(type=dataset_type, data_root=data_root, split='train',
                 pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=32,
    num_workers=4,
    persistent_workers=True,
    pin_memory=True,  # page-locked batches copy to the GPU faster
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(type=dataset_type, data_root=data_root, split='val',
                 pipeline=query_pipeline, gallery_pipeline=gallery_pipeline),
)
val_evaluator = dict(type='CIRRMetric')
test_dataloader = val_dataloader
test_evaluator = val_evaluator
