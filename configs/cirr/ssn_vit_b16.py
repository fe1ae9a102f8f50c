# SSN with CLIP ViT-B/16 ('openai' weights: QuickGELU, read from the tag). 224 px, 197 image
# tokens (4x ViT-B/32's 50), same widths (C_v 768, C_t = W = D = 512). Not in the paper: the
# batch (128) and the learning-rate split are the ViT-B/32 recipe's, untuned.
# Parameters, activation memory and a suggested GPU: docs/backbones.md, "Larger backbones".
# Everything else is configs/cirr/ssn.py's (tests/test_configs.py pins that).
_base_ = ['./ssn.py']

model = dict(backbone=dict(arch='ViT-B-16', pretrained='openai'))
