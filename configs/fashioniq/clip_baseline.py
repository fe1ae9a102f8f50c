# The CLIP "image + text" baseline on Fashion-IQ.
# Zero-shot: python tools/test.py configs/fashioniq/clip_baseline.py --no-checkpoint
# Fine-tuned with SSN's InfoNCE and schedule: python tools/train.py configs/fashioniq/clip_baseline.py
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
