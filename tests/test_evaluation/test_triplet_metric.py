"""TripletRecallMetric: Recall@K of own triplets, the reference removed or kept, per group,
with the pictures of GalleryMetric."""
import logging

import pytest
import torch
from mmengine.logging import MMLogger
from PIL import Image

from ssn_plugin.evaluation import TripletRecallMetric
from ssn_plugin.evaluation import metrics as metrics_module


def test_the_metric_keeps_or_removes_the_reference_and_breaks_down_by_group():
    """Gallery one-hot; each query is 0.9 x its reference + 0.1 x its target (normalised):
    removed, the target ranks first (R@1 = 100); kept, the reference does (R@1 = 0)."""
    gallery = torch.eye(6)
    samples = []
    for i, group in enumerate(('a', 'a', 'b')):
        ref, tgt = 2 * i, 2 * i + 1
        feat = 0.9 * gallery[ref] + 0.1 * gallery[tgt]
        samples.append(dict(query_feat=feat / feat.norm(), ref_index=ref, target_index=tgt,
                            group=group))
    for exclude, r1 in ((True, 100.0), (False, 0.0)):
        metric = TripletRecallMetric(topk=(1, 2))
        metric.dataset_meta = dict(exclude_reference=exclude)
        metric.set_gallery(gallery, [str(i) for i in range(6)])
        metric.process(None, samples)
        out = metric.evaluate(3)
        assert out['triplets/R@1'] == r1 and out['triplets/R@2'] == 100.0
        assert out['triplets/mean_R'] == (r1 + 100.0) / 2
        assert out['triplets/a/R@1'] == r1 and out['triplets/b/R@2'] == 100.0
    metric = TripletRecallMetric()
    metric.set_gallery(gallery, [str(i) for i in range(6)])
    metric.process(None, [dict(samples[0], group=None)])
    out = metric.evaluate(1)
    assert out['triplets/R@1'] == 100.0  # no dataset_meta: the reference is removed
    assert not any('/a/' in k for k in out)  # no group breakdown without groups


def test_recall_by_hand_on_a_ranking():
    """Gallery of 5 one-hot rows; query i scores row j by the weights below, reference row 0
    removed: target ranks 0, 1 and 3 -> R@1 = 1/3, R@2 = 2/3, R@4 = 3/3."""
    gallery = torch.eye(5)
    weights = [([0.1, 0.9, 0.3, 0.2, 0.0], 1),  # target 1 first
               ([0.9, 0.5, 0.6, 0.1, 0.0], 1),  # row 2 beats the target: rank 1
               ([0.9, 0.8, 0.7, 0.6, 0.5], 4)]  # rows 1-3 beat it: rank 3
    samples = [dict(query_feat=torch.tensor(w), ref_index=0, target_index=t)
               for w, t in weights]
    metric = TripletRecallMetric(topk=(1, 2, 4), prefix='own')
    metric.set_gallery(gallery, [str(i) for i in range(5)])
    metric.process(None, samples)
    assert metric.results[0]['group'] is None
    out = metric.evaluate(3)
    assert out == pytest.approx({'own/R@1': 100 / 3, 'own/R@2': 200 / 3, 'own/R@4': 100.0,
                                 'own/mean_R': (100 / 3 + 200 / 3 + 100) / 3})


def test_a_target_outside_the_gallery_is_refused():
    gallery = torch.eye(3)
    metric = TripletRecallMetric()
    metric.set_gallery(gallery, ['a', 'b', 'c'])
    metric.process(None, [dict(query_feat=gallery[1], ref_index=0, target_index=-1)])
    with pytest.raises(ValueError, match='1 queries have no target in the gallery'):
        metric.evaluate(1)


def test_log_and_pictures_follow_exclude_reference(tmp_path, monkeypatch):
    """The logged tables say whether the reference was removed; the pictures rank as the
    recall does (the reference first when kept, absent when removed)."""
    logger = MMLogger.get_current_instance()
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger.addHandler(handler)
    drawn = []
    monkeypatch.setattr(metrics_module, 'draw_retrieval_grid',
                        lambda ref, text, items, ground_truth=None:
                        drawn.append([n for _, n, _ in items]) or Image.new('RGB', (4, 4)))
    gallery = torch.eye(6, 9)  # 6 images of 9 dimensions
    feat = 0.6 * gallery[0] + 0.8 * gallery[1]
    sample = dict(query_feat=feat, ref_index=0, target_index=1, group='g', ref_img_path='r',
                  text='t', tgt_name='b', sample_idx=0)
    try:
        for exclude, first in ((True, 'b'), (False, 'b')):
            metric = TripletRecallMetric(topk=(1, ), show_dir=str(tmp_path), show_topk=2)
            metric.dataset_meta = dict(exclude_reference=exclude)
            metric.set_gallery(gallery, list('abcdef'), [f'{n}.png' for n in 'abcdef'])
            metric.process(None, [sample])
            metric.evaluate(1)
            assert drawn[-1][0] == first and (('a' in drawn[-1]) != exclude)
            where = 'reference removed' if exclude else 'reference kept'
            assert any(m.startswith(f'Recall (%) of 1 queries, gallery of 6 images, {where}:')
                       for m in messages)
        table = next(m for m in messages if m.startswith('Recall (%) by query group'))
        header = [c.strip() for c in table.splitlines()[2].strip('|').split('|')]
        assert header == ['group', 'queries', 'R@1']
    finally:
        logger.removeHandler(handler)
