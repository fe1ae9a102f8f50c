# SSN with CLIP ViT-L/14 ('openai' weights: QuickGELU, read from the tag). 224 px, 257 image
# tokens; C_v 1024, C_t = W 768, D 768. Not in the paper: the batch (128) and the learning-rate
# split are the ViT-B/32 recipe's, untuned (the CLIP group trains at lr x 0.2).
# A batch of 128 needs about 74 GiB with AMP (docs/backbones.md, "Larger backbones"): on an
# 80 GB GPU add
#   --cfg-options model.backbone.grad_checkpointing=True
# For the 336 px weights use arch='ViT-L-14-336': the pipelines take the size from the model.
# Everything else is configs/fashioniq/ssn.py's (tests/test_configs.py pins that).
_base_ = ['./ssn.py']

# While FreezeVisionTowerHook keeps the image tower frozen, its outputs are cached in host
# memory ('cpu'): the train and val images need about 30-40 GiB at this size.
model = dict(backbone=dict(arch='ViT-L-14', pretrained='openai',
                           feature_cache='cpu'))
