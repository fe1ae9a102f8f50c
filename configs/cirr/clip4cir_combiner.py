# CLIP4Cir (Baldrati et al., CVPR-W 2022), stage 2, on CIRR: the Combiner on the frozen CLIP of
# stage 1 (ssn_plugin/models/combiner.py has its equations). Projection 4x and hidden 8x the
# embedding width (CLIP4Cir's RN50x4: 2560 / 5120 on 640). The optimiser, schedule and data
# are ./clip_baseline.py's (SSN's budget); CLIP4Cir's own combiner runs used other batch sizes
# and epochs. Load stage 1 (its CLIP; the combiner starts fresh):
#   python tools/train.py configs/cirr/clip4cir_combiner.py \
#       --cfg-options load_from=work_dirs/clip4cir_stage1/<best checkpoint>.pth
# Without load_from the Combiner trains on the zero-shot 'openai' CLIP.
_base_ = ['./clip_baseline.py']

model = dict(
    _delete_=True,
    type='Combiner',
    backbone=dict(type='OpenCLIPBackbone', arch='ViT-B-32', pretrained='openai'),
    projection_dim=None,  # 4 x 512
    hidden_dim=None,  # 8 x 512
    dropout=0.5,
    loss=dict(type='QueryToTargetCELoss', logit_scale=100.0, gather=True),
    data_preprocessor=dict(type='CIRDataPreprocessor'),
)
# A stage-1 checkpoint has no combiner tensors: they may be missing when training starts from it
# (a test or a resume still needs every tensor).
custom_hooks = [
    dict(type='SafeCheckpointLoaderHook', new_modules=('combiner.', )),
    dict(type='EpochSeedHook'),
    dict(type='ImageSizeFromModelHook'),
    dict(type='GalleryFeatureHook'),
]
