# The SSN release's CIRR schedule (README command): Adam, lr 5e-5, lr_ratio 0.2,
# StepLR(step 10, gamma 0.1) per epoch, 50 epochs, validation every epoch.
# Learning-rate split of the release (docs/method.md, section 3), as multipliers of lr with
# lr_ratio 0.2:
# head 1, fusion + gates 4r, token type embeddings 4r, token projection 2r, CLIP r.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='Adam', lr=5e-5, weight_decay=0.0),
    paramwise_cfg=dict(custom_keys={
        'clip': dict(lr_mult=0.2),
        'token_proj': dict(lr_mult=0.4),
        'token_type': dict(lr_mult=0.8),
        'token_selection': dict(lr_mult=0.8),
        'fusion': dict(lr_mult=0.8),
    }),
)
param_scheduler = dict(type='StepLR', by_epoch=True, step_size=10, gamma=0.1)
train_cfg = dict(by_epoch=True, max_epochs=50, val_interval=1)
val_cfg = dict()
test_cfg = dict()
# The recipe's learning rates are for a global batch of 128 (the release's, one GPU).
# `tools/train.py --auto-scale-lr` scales them linearly to world size x batch_size.
auto_scale_lr = dict(enable=False, base_batch_size=128)
