# SSN fine-tuned on your own triplets (CustomCIRDataset; docs/data.md, "Your own triplets"):
#   data_root/{train,val}.jsonl, optional gallery.txt, images under data_root/images/.
#   python tools/check_data.py configs/custom/ssn_triplets.py --cfg-options data_root=DIR
#   python tools/train.py configs/custom/ssn_triplets.py --cfg-options data_root=DIR \
#       load_from=work_dirs/ssn/best_cirr_Avg_epoch_N.pth
# data_root=DIR alone moves every dataset (tools' --cfg-options follow it). Start from a
# CIRR-trained SSN (load_from, the same architecture; another one is refused with the tensors
# that differ) or, with load_from=None, from the CLIP weights of model.backbone.pretrained.
# AmpOptimWrapper needs a GPU; on CPU add optim_wrapper.type=OptimWrapper.
_base_ = ['../cirr/ssn.py']

data_root = 'data/my_triplets'
dataset_type = 'CustomCIRDataset'

# The pipelines are CIRR's (CLIP resize + center crop to the model's size).

# One GPU: batch 64 (half the release's 128, which needs about twice the memory of ViT-B/32 with
# AMP; not measured here, this project has no GPU run yet). A smaller batch also gives a small
# dataset more steps per epoch. The InfoNCE sees 64 negatives per query.
train_dataloader = dict(
    batch_size=64,
    dataset=dict(type=dataset_type, data_root=data_root, split='train'))
val_dataloader = dict(
    batch_size=64,
    dataset=dict(type=dataset_type, data_root=data_root, split='val'))
test_dataloader = val_dataloader
val_evaluator = dict(type='TripletRecallMetric')
test_evaluator = val_evaluator

# Fine-tuning: the release's learning rates scaled linearly to batch 64 (5e-5 x 64 / 128), with
# the release's lr split (../_base_/schedules/cirr_ssn.py), a 100-step warm-up and cosine decay
# over 20 epochs. A CIRR-trained start is already close: fewer epochs (train_cfg.max_epochs)
# are usually enough; the best epoch is kept either way.
max_epochs = 20
optim_wrapper = dict(optimizer=dict(lr=2.5e-5))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs,
         eta_min=0.0),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=1)
auto_scale_lr = dict(base_batch_size=64)

load_from = None  # a trained SSN checkpoint of the same architecture, e.g. CIRR's best

default_hooks = dict(
    checkpoint=dict(save_best='triplets/mean_R', rule='greater', max_keep_ckpts=2))
