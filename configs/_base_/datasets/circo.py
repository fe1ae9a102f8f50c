# CIRCO (ICCV 2023), val and test: there is no training split, so a CIRCO config evaluates a
# model trained elsewhere (CIRR) or a zero-shot baseline. The gallery is all 123,403 COCO 2017
# unlabeled images; CLIPResizeCrop without a size takes the model's input resolution.
# Protocol (docs/evaluation.md, section 5): whole gallery, reference kept, mAP@{5,10,25,50}.
dataset_type = 'CIRCO'
data_root = 'data/CIRCO'
# What the model reads: the relative caption alone (the usual CIRCO setting). To add the
# shared concept use e.g. '{shared_concept}, {relative_caption}' and say so with the numbers.
text_template = '{relative_caption}'

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

val_dataloader = dict(
    batch_size=32,
    num_workers=4,
    persistent_workers=True,
    pin_memory=True,  # page-locked batches copy to the GPU faster
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(type=dataset_type, data_root=data_root, split='val',
                 text_template=text_template, pipeline=query_pipeline,
                 gallery_pipeline=gallery_pipeline),
)
val_evaluator = dict(type='CIRCOMetric')
# test: tools/test.py CONFIG CHECKPOINT --split test --export-dir DIR writes the server file.
test_dataloader = val_dataloader
test_evaluator = val_evaluator
