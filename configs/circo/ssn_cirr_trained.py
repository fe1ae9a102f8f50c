# Cross-dataset evaluation (as CoVR reports): an SSN checkpoint trained on CIRR
# (configs/cirr/ssn.py), evaluated on CIRCO val, or exported for the CIRCO test server:
#   python tools/test.py configs/circo/ssn_cirr_trained.py work_dirs/ssn/best_cirr_Avg_*.pth
#   python tools/test.py configs/circo/ssn_cirr_trained.py CKPT --split test --export-dir out/
# Training with this config trains on CIRR and validates on CIRCO val.
_base_ = ['../cirr/ssn.py']

_circo = dict(
    type='CIRCO', data_root='data/CIRCO', split='val', text_template='{relative_caption}',
    pipeline=[
        dict(type='LoadCIRImages', keys=('ref_img', )),
        dict(type='CLIPResizeCrop', keys=('ref_img', )),
        dict(type='PackCIRInputs', keys=('ref_img', )),
    ],
    gallery_pipeline=[
        dict(type='LoadCIRImages', keys=('img', )),
        dict(type='CLIPResizeCrop', keys=('img', )),
        dict(type='PackCIRInputs', keys=('img', )),
    ])
val_dataloader = dict(dataset=dict(_delete_=True, **_circo))
test_dataloader = dict(dataset=dict(_delete_=True, **_circo))
val_evaluator = dict(_delete_=True, type='CIRCOMetric')
test_evaluator = dict(_delete_=True, type='CIRCOMetric')
default_hooks = dict(checkpoint=dict(save_best='circo/mAP@10'))
