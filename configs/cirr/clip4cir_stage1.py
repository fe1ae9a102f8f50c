# CLIP4Cir (Baldrati et al., CVPR-W 2022), stage 1, on CIRR: CLIP fine-tuned with the raw
# element-wise sum normalize(v + t) and query -> target cross-entropy (logit scale 100).
# Everything else (optimiser, schedule, data, hooks) is ./clip_baseline.py's, hence SSN's: the
# same budget for SSN and its parent. Stage 2 trains the Combiner on this CLIP:
#   python tools/train.py configs/cirr/clip4cir_stage1.py
#   python tools/train.py configs/cirr/clip4cir_combiner.py \
#       --cfg-options load_from=work_dirs/clip4cir_stage1/<best checkpoint>.pth
_base_ = ['./clip_baseline.py']

model = dict(
    combine='raw',
    loss=dict(_delete_=True, type='QueryToTargetCELoss', logit_scale=100.0, gather=True),
)
