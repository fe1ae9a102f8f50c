# Runtime shared by every ssn_plugin config.
default_scope = 'ssn_plugin'

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='SafeCheckpointHook', interval=1, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)
# SafeCheckpointLoaderHook makes the Runner load checkpoints with weights_only=True (torch >= 2.4);
# ImageSizeFromModelHook gives resize transforms left without a size (CLIPResizeCrop()) the
# model's input resolution; GalleryFeatureHook encodes the evaluation gallery once before each
# validation / test.
# EpochSeedHook reseeds every training epoch from (seed, epoch, rank): resume = never stopped.
custom_hooks = [
    dict(type='SafeCheckpointLoaderHook'),
    dict(type='EpochSeedHook'),
    dict(type='ImageSizeFromModelHook'),
    dict(type='GalleryFeatureHook'),
]

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)
log_processor = dict(by_epoch=True)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)
