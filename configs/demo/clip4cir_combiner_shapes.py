# CLIP4Cir's stage 2 on the shapes demo, on CPU: the Combiner on the frozen CLIP of
# ./clip4cir_stage1_shapes.py (load it with --cfg-options load_from=...; the combiner's tensors
# start fresh). Everything else is ./ssn_shapes.py's.
#   python tools/train.py configs/demo/clip4cir_combiner_shapes.py \
#       --cfg-options load_from=work_dirs/clip4cir_stage1_shapes/epoch_12.pth
_base_ = ['./ssn_shapes.py']

model = dict(
    _delete_=True,
    type='Combiner',
    backbone=dict(
        type='OpenCLIPBackbone',
        arch=dict(
            embed_dim=64,
            vision_cfg=dict(image_size=64, layers=2, width=64, patch_size=8, head_width=32),
            text_cfg=dict(context_length=32, vocab_size=49408, width=64, heads=2, layers=2)),
        pretrained=None),
    projection_dim=None,  # 4 x 64
    hidden_dim=None,  # 8 x 64
    dropout=0.5,
    loss=dict(type='QueryToTargetCELoss', logit_scale=100.0),
    data_preprocessor=dict(type='CIRDataPreprocessor'),
)
custom_hooks = [
    dict(type='SafeCheckpointLoaderHook', new_modules=('combiner.', )),
    dict(type='EpochSeedHook'),
    dict(type='ImageSizeFromModelHook'),
    dict(type='GalleryFeatureHook'),
]
