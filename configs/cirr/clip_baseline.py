# The CLIP "image + text" baseline on CIRR (normalised sum of the two CLIP embeddings).
# Zero-shot, to check a data set-up against published numbers before training anything:
#   python tools/test.py configs/cirr/clip_baseline.py --no-checkpoint
# Fine-tuned with SSN's InfoNCE and schedule: python tools/train.py configs/cirr/clip_baseline.py
# mode='text' / 'image': text-only / image-only baselines (--cfg-options model.mode=text).
_base_ = ['./ssn.py']

model = dict(
    _delete_=True,
    type='CLIPBaseline',
    backbone=dict(type='OpenCLIPBackbone', arch='ViT-B-32', pretrained='openai',
                  train_vision=True, train_text=True),
    mode='sum',
    loss=dict(type='SSNLoss', logit_scale=100.0, gather=True),
    data_preprocessor=dict(type='CIRDataPreprocessor'),
)
