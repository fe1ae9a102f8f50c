# SSN with CLIP ViT-H/14 (LAION-2B weights 'laion2b_s32b_b79k': GELU, read from the tag).
# 224 px, 257 image tokens; C_v 1280, C_t = W 1024, D 1024. Gradient checkpointing is on:
# each CLIP block's activations are recomputed in the backward pass (about a third more
# compute per step) so that a batch of 128 fits one 80 GB GPU. Not in the paper: the batch and
# the learning-rate split are the ViT-B/32 recipe's, untuned.
# Parameters, activation memory and a suggested GPU: docs/backbones.md, "Larger backbones".
# Everything else is configs/cirr/ssn.py's (tests/test_configs.py pins that).
_base_ = ['./ssn.py']

model = dict(backbone=dict(arch='ViT-H-14', pretrained='laion2b_s32b_b79k',
                           grad_checkpointing=True))
