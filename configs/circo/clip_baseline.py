# The zero-shot CLIP "image + text" baseline on CIRCO: no training, no checkpoint.
#   python tools/test.py configs/circo/clip_baseline.py --no-checkpoint
# mode='text' / mode='image' give the text-only / image-only baselines
# (--cfg-options model.mode=text); model.combine=raw: CLIP4Cir's sum of the raw embeddings.
_base_ = ['../_base_/datasets/circo.py', '../_base_/default_runtime.py']

model = dict(
    type='CLIPBaseline',
    backbone=dict(type='OpenCLIPBackbone', arch='ViT-B-32', pretrained='openai'),
    mode='sum',
    # normalize(normalize(v) + normalize(t)); combine='raw' is CLIP4Cir's zero-shot sum,
    # normalize(v + t) of the raw embeddings (ssn_plugin/models/clip_baseline.py).
    combine='normalized',
    data_preprocessor=dict(type='CIRDataPreprocessor'),
)
val_cfg = dict()
test_cfg = dict()
