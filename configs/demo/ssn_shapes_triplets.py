# The own-triplets recipe (configs/custom/ssn_triplets.py) with the demo's tiny model, on CPU:
# the worked example of README "Train on your own triplets". Fine-tunes the quick start's
# checkpoint on the shapes set written in the JSONL layout:
#   python -c "from ssn_plugin.datasets import generate_shapes_triplets as g; \
#       g('data/my_triplets_demo', seed=1, num_train_sets=600, num_val_sets=100)"
#   python tools/check_data.py configs/demo/ssn_shapes_triplets.py
#   python tools/train.py configs/demo/ssn_shapes_triplets.py \
#       --cfg-options load_from=work_dirs/ssn_shapes/epoch_12.pth
_base_ = ['../custom/ssn_triplets.py']

data_root = 'data/my_triplets_demo'

model = dict(
    _delete_=True,
    type='SSN',
    backbone=dict(
        type='OpenCLIPBackbone',
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
    degradation=True,
    data_preprocessor=dict(type='CIRDataPreprocessor'),
)

# CPU: full precision, loading in the main process, 4 epochs.
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=1e-4))
train_dataloader = dict(batch_size=32, num_workers=0, persistent_workers=False,
                        pin_memory=False, dataset=dict(data_root=data_root))
val_dataloader = dict(batch_size=128, num_workers=0, persistent_workers=False,
                      pin_memory=False, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
max_epochs = 4
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs,
         eta_min=0.0),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=1)
auto_scale_lr = dict(base_batch_size=32)
default_hooks = dict(logger=dict(interval=10))
