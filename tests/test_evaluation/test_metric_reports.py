"""What the metrics report besides their numbers: the logged tables (gallery size, protocol,
template, per-group and per-aspect rows), the retrieval pictures (which images, in which
order, how many), the exported files (their bytes) and the settings around them."""
import json
import logging

import pytest
import torch
from mmengine.logging import MMLogger
from PIL import Image

from ssn_plugin.evaluation import CIRCOMetric, CIRRMetric, FashionIQMetric
from ssn_plugin.evaluation import metrics as metrics_module
from ssn_plugin.evaluation import submissions


@pytest.fixture
def logged():
    """The messages the metrics log through MMEngine's current logger."""
    logger = MMLogger.get_current_instance()
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)


@pytest.fixture
def pictures(monkeypatch):
    """The arguments of every retrieval picture drawn (our own drawing, recorded)."""
    drawn = []

    def draw(ref_path, text, items, ground_truth=None):
        drawn.append(dict(ref=ref_path, text=text, items=items, truth=ground_truth))
        return Image.new('RGB', (4, 4))
    monkeypatch.setattr(metrics_module, 'draw_retrieval_grid', draw)
    return drawn


def one_hot_gallery(size: int):
    """Row i is the i-th unit vector of size + 4 dimensions (rows and width differ)."""
    return torch.eye(size, size + 4)


def cirr_samples(gallery, count, groups=None):
    """Query i: reference i, target i + 1, feature 0.8 x target + 0.6 x reference, so the
    target ranks first once the reference is removed and second when it is kept."""
    samples = []
    for i in range(count):
        feat = 0.8 * gallery[i + 1] + 0.6 * gallery[i]
        samples.append(dict(query_feat=feat, ref_index=i, target_index=i + 1, pairid=100 + i,
                            subset_index=list(range(i, i + 6)),
                            group=None if groups is None else groups[i],
                            ref_img_path=f'ref{i}.png', text=f'text {i}', tgt_name=f'g{i + 1}',
                            sample_idx=i))
    return samples


def evaluate(metric, gallery, samples, names=None, paths=None):
    names = names or [f'g{i}' for i in range(gallery.shape[0])]
    metric.set_gallery(gallery, names, paths or [f'/gallery/{n}.png' for n in names])
    metric.process(None, samples)
    return metric.evaluate(len(samples))


def test_cirr_logs_the_gallery_and_breaks_down_by_group(logged):
    gallery = one_hot_gallery(12)
    samples = cirr_samples(gallery, 4, groups=['a', 'b', 'a', 'b'])
    samples[3]['query_feat'] = gallery[0]  # query 3 misses: its target is not first
    out = evaluate(CIRRMetric(topk=(1, 5), subset_topk=(1, )), gallery, samples)
    assert out['cirr/R@1'] == 75.0 and out['cirr/b/R@1'] == 50.0 and out['cirr/a/R@1'] == 100.0
    assert out['cirr/a/Rsubset@1'] == 100.0 and 'cirr/Rsubset@2' not in out
    assert not any(k.startswith('cirr/a/Rsubset@2') for k in out)
    assert any('CIRR recall (%) of 4 queries, gallery of 12 images' in m for m in logged)
    table = next(m for m in logged if m.startswith('CIRR recall (%) by query group'))
    rows = [[c.strip() for c in line.strip('|').split('|')] for line in table.splitlines()
            if '|' in line]
    assert rows[0] == ['group', 'queries', 'R@1', 'R@5', 'Rsubset@1']
    assert rows[1][:3] == ['a', '2', '100.00'] and rows[2][:3] == ['b', '2', '50.00']
    assert {k for k in out if k.startswith('cirr/a/')} == {'cirr/a/R@1', 'cirr/a/R@5',
                                                           'cirr/a/Rsubset@1'}


def test_cirr_without_groups_has_no_breakdown():
    gallery = one_hot_gallery(12)
    out = evaluate(CIRRMetric(), gallery, cirr_samples(gallery, 3))
    assert set(out) == {f'cirr/{k}' for k in ('R@1', 'R@5', 'R@10', 'R@50', 'Rsubset@1',
                                              'Rsubset@2', 'Rsubset@3', 'Avg',
                                              'arithmetic_mean', 'harmonic_mean',
                                              'geometric_mean')}


def test_prefix_and_collect_device_are_passed_on():
    metric = CIRRMetric(prefix='mine', collect_device='gpu')
    assert metric.prefix == 'mine' and metric.collect_device == 'gpu'
    assert CIRRMetric().prefix == 'cirr' and CIRRMetric().collect_device == 'cpu'
    gallery = one_hot_gallery(12)
    assert 'mine/R@1' in evaluate(CIRRMetric(prefix='mine'), gallery, cirr_samples(gallery, 2))


def test_cirr_pictures_remove_the_reference_and_default_to_8_of_5(pictures, tmp_path):
    gallery = one_hot_gallery(20)
    samples = cirr_samples(gallery, 10)
    evaluate(CIRRMetric(show_dir=str(tmp_path)), gallery, samples)
    assert len(pictures) == 8 and all(len(p['items']) == 5 for p in pictures)
    first = pictures[0]
    assert (first['ref'], first['text'], first['truth']) == ('ref0.png', 'text 0', 'g1')
    names = [name for _, name, _ in first['items']]
    assert names[0] == 'g1' and 'g0' not in names  # the target first, the reference removed
    assert first['items'][0][0] == '/gallery/g1.png'
    assert first['items'][0][2] == pytest.approx(0.8)  # the cosine score
    assert sorted(p.name for p in tmp_path.iterdir()) == [f'query_{i:06d}.png' for i in range(8)]


def test_pictures_of_a_gallery_smaller_than_show_topk(pictures, tmp_path):
    """4 images, 5 wanted: CIRR shows the 3 left once the reference is removed."""
    gallery = one_hot_gallery(4)
    evaluate(CIRRMetric(show_dir=str(tmp_path), subset_topk=()), gallery,
             [dict(s, subset_index=[0, 1, 2, 3, 0, 1]) for s in cirr_samples(gallery, 2)])
    assert [len(p['items']) for p in pictures] == [3, 3]


def test_pictures_need_the_gallery_paths(pictures, tmp_path):
    gallery = one_hot_gallery(12)
    metric = CIRRMetric(show_dir=str(tmp_path))
    metric.set_gallery(gallery, [f'g{i}' for i in range(12)])  # no paths
    metric.process(None, cirr_samples(gallery, 2))
    with pytest.raises(RuntimeError, match='gallery image paths'):
        metric.evaluate(2)
    # Without show_dir, nothing of the pictures is recorded per query.
    plain = CIRRMetric()
    plain.set_gallery(gallery, [f'g{i}' for i in range(12)])
    plain.process(None, cirr_samples(gallery, 1))
    assert 'ref_img_path' not in plain.results[0] and 'group' in plain.results[0]


def test_cirr_export_lists_and_the_short_gallery_warning(tmp_path, logged):
    for size, warned in ((50, True), (51, False), (52, False)):
        gallery = one_hot_gallery(size)
        metric = CIRRMetric(export_dir=str(tmp_path / str(size)), export_name='run')
        evaluate(metric, gallery, cirr_samples(gallery, 2))
        with open(tmp_path / str(size) / 'recall_submission_run.json') as f:
            top = json.load(f)
        assert len(top['100']) == min(size - 1, 50) and 'g0' not in top['100']
        assert top['100'][0] == 'g1'
        assert any(f'The gallery has {size} images' in m for m in logged) == warned


def test_fashioniq_logs_the_protocol_and_sizes_and_draws_within_the_category(
        logged, pictures, tmp_path):
    gallery = one_hot_gallery(10)
    # dress: rows [0, 6), one query; toptee: rows [6, 10), two queries.
    samples = [dict(query_feat=gallery[2] * 0.8 + gallery[0] * 0.6, ref_index=0, target_index=2,
                    category='dress', gallery_range=(0, 6)),
               dict(query_feat=gallery[7], ref_index=6, target_index=7, category='toptee',
                    gallery_range=(6, 10)),
               dict(query_feat=gallery[9], ref_index=6, target_index=9, category='toptee',
                    gallery_range=(6, 10))]
    for s in samples:
        s.update(ref_img_path='r.png', text='t', tgt_name=f'g{s["target_index"]}',
                 sample_idx=s['target_index'])
    metric = FashionIQMetric(topk=(1, 2), show_dir=str(tmp_path), show_topk=5)
    metric.dataset_meta = dict(gallery_protocol='val-split')
    out = evaluate(metric, gallery, samples)
    assert out['fiq/dress_R@1'] == 100.0 and out['fiq/toptee_R@1'] == 100.0
    table = next(m for m in logged if m.startswith('Fashion-IQ recall'))
    assert 'gallery protocol "val-split"' in table
    assert '1 / 6' in table and '2 / 4' in table  # queries / gallery per category
    # Pictures rank within the category's rows, the reference kept (Fashion-IQ's protocol).
    names = [[n for _, n, _ in p['items']] for p in pictures]
    assert names[0][:2] == ['g2', 'g0'] and set(names[0]) <= {f'g{i}' for i in range(6)}
    # 5 wanted: the dress gallery has 6 rows, toptee's 4 (all shown, its reference too).
    assert [len(n) for n in names] == [5, 4, 4]
    assert set(names[1]) == {'g6', 'g7', 'g8', 'g9'}
    assert names[1][0] == 'g7'
    metric = FashionIQMetric()
    metric.set_gallery(gallery, [f'g{i}' for i in range(10)])
    metric.process(None, samples[:1])
    metric.evaluate(1)
    assert any('gallery protocol "unknown"' in m for m in logged)


def circo_samples(gallery, count, target_offset=1):
    samples = []
    for i in range(count):
        target = i + target_offset
        # The target first, the reference (kept by CIRCO) second.
        feat = 0.8 * gallery[target] + 0.6 * gallery[i]
        samples.append(dict(query_feat=feat, ref_index=i, target_index=target,
                            query_id=i, gt_index=[target], semantic_aspects=['focus']
                            if i % 2 else ['colour', 'focus'], ref_img_path='r.png',
                            text='t', tgt_name=f'g{target}', sample_idx=i))
    return samples


def test_circo_logs_template_and_aspects(logged):
    gallery = one_hot_gallery(12)
    metric = CIRCOMetric(ks=(5, 10), aspect_k=5)
    metric.dataset_meta = dict(text_template='a photo that {relative_caption}')
    out = evaluate(metric, gallery, circo_samples(gallery, 3))
    assert out['circo/colour/mAP@5'] == 100.0 and 'circo/colour/mAP@10' not in out
    overall = next(m for m in logged if m.startswith('CIRCO (%) of 3 queries'))
    assert 'gallery of 12 images' in overall
    assert 'text "a photo that {relative_caption}"' in overall
    assert 'colour' not in overall  # the overall table holds the overall keys only
    aspects = next(m for m in logged if m.startswith('CIRCO mAP@5 (%) by semantic aspect'))
    rows = {line.split('|')[1].strip(): line.split('|')[2].strip()
            for line in aspects.splitlines() if '|' in line}
    assert rows == {'semantic aspect': 'queries', 'colour': '2', 'focus': '3'}
    metric = CIRCOMetric(ks=(5, 10))
    evaluate(metric, gallery, circo_samples(gallery, 1))
    assert any('text "unknown"' in m for m in logged)


def test_circo_targets_at_row_0_gallery_depth_and_export(tmp_path, pictures):
    gallery = one_hot_gallery(10)
    samples = circo_samples(gallery, 2, target_offset=0)  # the first target is gallery row 0
    out = evaluate(CIRCOMetric(ks=(5, 10)), gallery, samples)  # 10 images rank the top 10
    assert out['circo/mAP@5'] == 100.0
    with pytest.raises(ValueError, match='the gallery has 10 images; CIRCO ranks the top 50'):
        evaluate(CIRCOMetric(ks=(5, 10), export_dir=str(tmp_path)), gallery, samples)
    big = one_hot_gallery(60)
    metric = CIRCOMetric(ks=(5, 10), export_dir=str(tmp_path), show_dir=str(tmp_path / 's'))
    evaluate(metric, big, circo_samples(big, 2), names=[str(1000 + i) for i in range(60)])
    with open(tmp_path / 'circo_submission_ssn.json') as f:
        exported = json.load(f)
    assert len(exported['0']) == 50 and exported['0'][0] == 1001
    # Pictures keep the reference (CIRCO does not remove it).
    assert len(pictures) == 2 and pictures[0]['items'][0][1] == '1001'
    assert pictures[0]['items'][1][1] == '1000'


def test_submission_files_are_compact_and_ordered(tmp_path):
    paths = submissions.write_cirr_submission(str(tmp_path), 'x', [12, 3],
                                              [['b', 'a'], ['c', 'd']], [['b'], ['c']])
    text = open(paths[0]).read()
    assert text == '{"12":["b","a"],"3":["c","d"],"metric":"recall","version":"rc2"}'
    circo = submissions.write_circo_submission(str(tmp_path / 'c.json'), [7, 2], [[1, 2], [3, 4]])
    assert open(circo).read() == '{"7":[1,2],"2":[3,4]}'  # the queries' own order


def test_submission_size_limits_name_the_server(tmp_path, monkeypatch):
    content = {'k': 'v'}
    size = len(json.dumps(content, separators=(',', ':')))
    assert submissions.dump_submission(str(tmp_path / 'ok.json'), content, size, 'X')
    with pytest.raises(RuntimeError, match=f'over the {size - 1} bytes allowed for an upload '
                       'to the X server'):
        submissions.dump_submission(str(tmp_path / 'big.json'), content, size - 1, 'X')
    monkeypatch.setattr(submissions, 'CIRR_SERVER_MAX_BYTES', 10)
    with pytest.raises(RuntimeError, match='the CIRR server'):
        submissions.write_cirr_submission(str(tmp_path), 'x', [1], [['a']], [['a']])
    monkeypatch.setattr(submissions, 'CIRCO_SERVER_MAX_BYTES', 5)
    with pytest.raises(RuntimeError, match='the CIRCO server'):
        submissions.write_circo_submission(str(tmp_path / 'c.json'), [1], [[1, 2]])
