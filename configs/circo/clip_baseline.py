# The zero-shot CLIP "image + text" baseline on CIRCO: no training, no checkpoint.
#   python tools/test.py configs/circo/clip_baseline.py --no-checkpoint
# mode='text' / mode='image' give the text-only / image-only baselines
# (--cfg-options model.mode=text).
_base_ = ['../_base_/datasets/circo.py', '../_base_/default_runtime.py']

model = dict(
    type='CLIPBaseline',
    backbone=dict(type='OpenCLIPBackbone', arch='ViT-B-32', pretrained='openai'),
    mode='sum',
    data_preprocessor=dict(type='CIRDataPreprocessor'),
)
val_cfg = dict()
test_cfg = dict()
