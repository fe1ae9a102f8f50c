"""CIRCO on the official annotation files, with a stand-in COCO unlabeled gallery."""
import json
import os
import os.path as osp

import pytest

from helpers import QUERY_PIPELINE, make_standin_circo
from ssn_plugin.datasets import CIRCO, MissingImages


@pytest.fixture(scope='module')
def circo_root(tmp_path_factory):
    return make_standin_circo(str(tmp_path_factory.mktemp('circo') / 'CIRCO'),
                              num_distractors=50)


def test_val_items_follow_the_records(circo_root, tmp_path):
    val = CIRCO(circo_root['root'], 'val', report_dir=str(tmp_path))
    records = circo_root['records']['val']
    assert len(val) == len(records) == 220
    # The gallery is the image-info file, in its order, named by COCO id.
    assert val.gallery_names == [str(i) for i in circo_root['ids']]
    for i in (0, 17, 219):
        item, record = val.get_data_info(i), records[i]
        assert item['query_id'] == record['id']
        assert item['text'] == record['relative_caption']
        assert val.gallery_names[item['ref_index']] == str(record['reference_img_id'])
        assert val.gallery_names[item['target_index']] == str(record['target_img_id'])
        assert [val.gallery_names[g] for g in item['gt_index']] == [
            str(g) for g in record['gt_img_ids']]
        assert item['semantic_aspects'] == record['semantic_aspects']
        assert item['ref_img_path'] == val.gallery[item['ref_index']]['img_path']
        assert item['tgt_img_path'] == val.gallery[item['target_index']]['img_path']
        assert item['ref_name'] == str(record['reference_img_id'])
        assert item['tgt_name'] == str(record['target_img_id'])
        assert item['relative_caption'] == record['relative_caption']
        assert item['shared_concept'] == record['shared_concept']
    assert max(len(val.get_data_info(i)['gt_index']) for i in range(len(val))) > 1


def test_test_split_has_no_ground_truth(circo_root, tmp_path):
    test = CIRCO(circo_root['root'], 'test', report_dir=str(tmp_path))
    assert len(test) == 800
    item = test.get_data_info(0)
    assert item['target_index'] == -1 and item['gt_index'] == [] and item['tgt_name'] is None
    assert sorted(test.get_data_info(i)['query_id'] for i in range(800)) == list(range(800))


def test_text_template(circo_root, tmp_path):
    record = circo_root['records']['val'][3]
    val = CIRCO(circo_root['root'], 'val', report_dir=str(tmp_path),
                text_template='{shared_concept}, {relative_caption}')
    assert val.get_data_info(3)['text'] == (
        f'{record["shared_concept"]}, {record["relative_caption"]}')
    with pytest.raises(ValueError, match=r"unknown fields \['caption'\]"):
        CIRCO(circo_root['root'], 'val', text_template='{caption}')
    with pytest.raises(ValueError, match='must contain {relative_caption}'):
        CIRCO(circo_root['root'], 'val', text_template='{shared_concept}')
    with pytest.raises(ValueError, match='no training split'):
        CIRCO(circo_root['root'], 'train')


def test_query_sample_carries_what_the_metric_reads(circo_root, tmp_path):
    val = CIRCO(circo_root['root'], 'val', report_dir=str(tmp_path), pipeline=QUERY_PIPELINE)
    sample = val[5]
    info = val.get_data_info(5)
    assert sample['inputs']['ref_img'].shape == (3, 32, 32)
    for key in ('query_id', 'gt_index', 'semantic_aspects', 'ref_index', 'target_index',
                'text'):
        assert getattr(sample['data_samples'], key) == info[key]


def test_missing_images_are_listed_or_dropped_and_counted(tmp_path):
    info = make_standin_circo(str(tmp_path / 'CIRCO'), num_distractors=5, splits=('val', ))
    record = info['records']['val'][0]
    img_dir = tmp_path / 'CIRCO' / 'COCO2017_unlabeled' / 'unlabeled2017'
    lost_gt = record['gt_img_ids'][-1]
    os.remove(img_dir / f'{lost_gt:012d}.png')
    os.remove(img_dir / f'{10_000_000:012d}.png')  # a distractor
    with pytest.raises(MissingImages, match='2 of .* referenced images are missing') as err:
        CIRCO(str(tmp_path / 'CIRCO'), 'val', report_dir=str(tmp_path / 'r'))
    assert 'image_info_unlabeled2017.json' in str(err.value)  # the layout is shown
    listed = (tmp_path / 'r' / 'missing_images_circo_val.txt').read_text().splitlines()
    assert sorted(line.split('\t')[1] for line in listed) == sorted(
        [str(lost_gt), str(10_000_000)])

    val = CIRCO(str(tmp_path / 'CIRCO'), 'val', skip_missing=True, report_dir=str(tmp_path))
    affected = [r['id'] for r in info['records']['val']
                if lost_gt in r['gt_img_ids'] or r['reference_img_id'] == lost_gt]
    assert val.dropped_query_ids == affected and record['id'] in affected
    assert len(val) == 220 - len(affected)
    assert len(val.gallery) == len(info['ids']) - 2
    assert str(lost_gt) not in val.gallery_names
    # check_images=False: no check, every record and gallery image kept; the gallery pipeline
    # given to the dataset is the gallery dataset's.
    unchecked = CIRCO(str(tmp_path / 'CIRCO'), 'val', check_images=False,
                      gallery_pipeline=[dict(type='LoadCIRImages', keys=('img', ))])
    assert len(unchecked) == 220 and len(unchecked.gallery) == len(info['ids'])
    assert type(unchecked.gallery_dataset().pipeline.transforms[0]).__name__ == 'LoadCIRImages'


def test_bad_records_name_the_file_and_record(tmp_path):
    info = make_standin_circo(str(tmp_path / 'CIRCO'), num_distractors=0, splits=('val', ))
    path = tmp_path / 'CIRCO' / 'annotations' / 'val.json'
    records = info['records']['val']
    broken = [dict(r) for r in records]
    broken[4]['gt_img_ids'] = [123]  # not in the image info, and the target not among them
    path.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=r'val.json, record 4 \(id 4\): target_img_id'):
        CIRCO(str(tmp_path / 'CIRCO'), 'val')
    broken[4]['gt_img_ids'] = [records[4]['target_img_id'], 123]
    path.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=r'record 4 \(id 4\): images \[123\] are not in'):
        CIRCO(str(tmp_path / 'CIRCO'), 'val')
    target = records[4]['target_img_id']
    for bad in ([target, target], [target, True]):  # a repeated ground truth, a boolean id
        broken[4]['gt_img_ids'] = bad
        path.write_text(json.dumps(broken))
        with pytest.raises(ValueError, match=r'record 4 \(id 4\): gt_img_ids should be a '
                                             'non-empty list of distinct image ids'):
            CIRCO(str(tmp_path / 'CIRCO'), 'val')
    broken[4]['gt_img_ids'] = records[4]['gt_img_ids']
    broken[4]['id'] = False
    path.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="'id' should be int, got bool"):
        CIRCO(str(tmp_path / 'CIRCO'), 'val')
    broken[4]['id'] = records[4]['id']
    del broken[4]['gt_img_ids']
    path.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="missing key 'gt_img_ids'"):
        CIRCO(str(tmp_path / 'CIRCO'), 'val')
    with pytest.raises(ValueError, match=r"missing key 'gt_img_ids'; a val record needs"):
        CIRCO(str(tmp_path / 'CIRCO'), 'val')
    broken[4] = [1, 2]  # not an object: named by its position, id unknown
    path.write_text(json.dumps(broken))
    with pytest.raises(ValueError,
                       match=r'val.json, record 4 \(id \?\): expected a JSON object'):
        CIRCO(str(tmp_path / 'CIRCO'), 'val')
    broken[4] = dict(records[4])
    del broken[4]['id']
    path.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=r"record 4 \(id \?\): missing key 'id'"):
        CIRCO(str(tmp_path / 'CIRCO'), 'val')
    broken[4] = dict(records[4], id=records[2]['id'])  # the id of record 2 again
    path.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=r'record 4 \(id 2\): the id is used twice'):
        CIRCO(str(tmp_path / 'CIRCO'), 'val')
    path.write_text(json.dumps(records))
    info_file = osp.join(tmp_path, 'CIRCO', 'COCO2017_unlabeled', 'annotations',
                         'image_info_unlabeled2017.json')
    content = open(info_file).read()
    with open(info_file, 'w') as f:
        f.write('[]')  # a list, not COCO's object
    with pytest.raises(ValueError, match='expected a JSON object with an "images" list'):
        CIRCO(str(tmp_path / 'CIRCO'), 'val')
    with open(info_file, 'w') as f:
        f.write(content)
    os.remove(path)
    with pytest.raises(FileNotFoundError,
                       match=r'(?s)val.json\nExpected layout:\n.*COCO2017'):
        CIRCO(str(tmp_path / 'CIRCO'), 'val')
    os.remove(info_file)
    with pytest.raises(FileNotFoundError,
                       match=r'image_info_unlabeled2017.json\nExpected layout:\n    data_root/'):
        CIRCO(str(tmp_path / 'CIRCO'), 'val')
