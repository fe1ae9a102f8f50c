# Cross-dataset evaluation (as CoVR reports): SSN trained on CIRR (configs/cirr/ssn.py, whose
# model and training set-up this inherits), evaluated on CIRCO val or exported for the CIRCO
# test server:
#   python tools/test.py configs/circo/ssn_cirr_trained.py work_dirs/ssn/best_cirr_Avg_epoch_N.pth
#   python tools/test.py configs/circo/ssn_cirr_trained.py CKPT --split test --export-dir out/
# Training with this config trains on CIRR and validates (and keeps the best) on CIRCO val.
_base_ = ['../cirr/ssn.py']

# CIRCO val replaces CIRR val. The query and gallery pipelines stay CIRR's: they are the same
# transforms as configs/_base_/datasets/circo.py's (tests/test_configs.py pins that).
val_dataloader = dict(
    dataset=dict(type='CIRCO', data_root='data/CIRCO', split='val',
                 text_template='{relative_caption}'))
test_dataloader = val_dataloader
val_evaluator = dict(type='CIRCOMetric')
test_evaluator = val_evaluator

default_hooks = dict(checkpoint=dict(save_best='circo/mAP@10'))
