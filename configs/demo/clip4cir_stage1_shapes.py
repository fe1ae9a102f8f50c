# CLIP4Cir's stage 1 on the shapes demo, on CPU: the quick start's tiny CLIP (from scratch)
# trained with the raw sum normalize(v + t) and query -> target cross-entropy; everything else is
# ./ssn_shapes.py's (the same budget as the demo's SSN). Then stage 2:
#   python tools/train.py configs/demo/clip4cir_stage1_shapes.py
#   python tools/train.py configs/demo/clip4cir_combiner_shapes.py \
#       --cfg-options load_from=work_dirs/clip4cir_stage1_shapes/epoch_12.pth
_base_ = ['./ssn_shapes.py']

model = dict(
    _delete_=True,
    type='CLIPBaseline',
    backbone=dict(
        type='OpenCLIPBackbone',
        arch=dict(
            embed_dim=64,
            vision_cfg=dict(image_size=64, layers=2, width=64, patch_size=8, head_width=32),
            text_cfg=dict(context_length=32, vocab_size=49408, width=64, heads=2, layers=2)),
        pretrained=None,
        train_vision=True,
        train_text=True),
    mode='sum',
    combine='raw',
    loss=dict(type='QueryToTargetCELoss', logit_scale=100.0),
    data_preprocessor=dict(type='CIRDataPreprocessor'),
)
