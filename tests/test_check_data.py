"""tools/check_data.py: the data doctor. Exit 0 on clean data, 1 naming the file (and line)
otherwise; the counts of its table; the share of a complete download; the lists it writes."""
import json
import os
import os.path as osp
import re
import shutil
import sys

import pytest

from helpers import (PROJECT_ROOT, run_tool, shared_data, tool, write_standin_images,
                     write_triplets)
from ssn_plugin.datasets import generate_shapes_triplets

sys.path.insert(0, osp.join(PROJECT_ROOT, 'tools'))
import check_data  # noqa: E402

CONFIG = osp.join(PROJECT_ROOT, 'configs', 'custom', 'ssn_triplets.py')


@pytest.fixture
def triplets(tmp_path):
    root = str(tmp_path / 'my_triplets')
    counts = generate_shapes_triplets(root, num_train_sets=6, num_val_sets=3, image_size=16)
    return root, counts


def check(capsys, tmp_path, *args):
    code = check_data.main([CONFIG, '--work-dir', str(tmp_path / 'work'), *args])
    return code, capsys.readouterr().out


def table_row(out: str, loader: str) -> list:
    row = next(line for line in out.splitlines() if re.match(rf'\|\s+{loader}\s+\|', line))
    return [cell.strip() for cell in row.strip('|').split('|')]


def test_clean_data_exits_0_with_its_counts(triplets, tmp_path, capsys):
    root, counts = triplets
    code, out = check(capsys, tmp_path, '--cfg-options', f'data_root={root}')
    assert code == 0, out
    train, val = table_row(out, 'train'), table_row(out, 'val')
    assert train[3] == str(counts['train_triplets']) and val[3] == str(counts['val_triplets'])
    # Val's gallery is the whole split: the triplets' images and gallery.txt's distractors.
    assert val[5] == str(counts['val_images'])
    assert val[6:9] == ['0', '0', '0']
    assert 'test: the same dataset as val' in out
    assert f'{counts["val_images"]} of the {counts["val_images"]} images' in out
    assert 'Training and evaluation would run' in out


def test_a_deleted_image_fails_and_names_the_file(triplets, tmp_path, capsys):
    root, _ = triplets
    first = json.loads(open(osp.join(root, 'val.jsonl')).readline())
    os.remove(osp.join(root, 'images', first['target']))
    code, out = check(capsys, tmp_path, '--cfg-options', f'data_root={root}')
    assert code == 1
    assert table_row(out, 'val')[6] == '1'
    report = tmp_path / 'work' / 'check_data' / 'missing_images_custom_val.txt'
    assert str(report) in out and 'FAIL val' in out
    assert osp.join(root, 'images', first['target']) in report.read_text()
    # The same data with skip_missing is trainable: the drop is counted, the run may go on.
    code, out = check(capsys, tmp_path, '--cfg-options', f'data_root={root}',
                      'val_dataloader.dataset.skip_missing=True',
                      'test_dataloader.dataset.skip_missing=True')
    assert code == 0, out
    assert re.search(r'val: skip_missing=True drops [1-9]\d* records', out)


def test_a_record_without_target_names_file_and_line(triplets, tmp_path, capsys):
    root, _ = triplets
    path = osp.join(root, 'val.jsonl')
    lines = open(path).read().splitlines()
    record = json.loads(lines[2])
    del record['target']
    lines[2] = json.dumps(record)
    open(path, 'w').write('\n'.join(lines) + '\n')
    code, out = check(capsys, tmp_path, '--cfg-options', f'data_root={root}')
    assert code == 1
    assert f"{path}, line 3: missing key 'target'" in out


def test_an_absent_root_prints_the_layout_and_the_source(tmp_path, capsys):
    code, out = check(capsys, tmp_path, '--cfg-options', f'data_root={tmp_path}/nothing',
                      '--split', 'train')
    assert code == 1
    assert 'does not exist. Expected layout' in out and 'train.jsonl' in out
    assert 'Where the data comes from' in out


def test_repeated_triplets_cut_captions_and_broken_files(tmp_path, capsys):
    root = tmp_path / 'data'
    rows = [dict(reference='a.png', caption='red', target='b.png'),
            dict(reference='a.png', caption='red', target='b.png'),
            dict(reference='b.png', caption=' '.join(['very'] * 90), target='c.png')]
    write_triplets(str(root), rows, 'train')
    (root / 'images' / 'c.png').write_bytes(b'not an image')
    code, out = check(capsys, tmp_path, '--cfg-options', f'data_root={root}', '--split',
                      'train')
    assert code == 0, out  # existence only: the broken file is not read
    row = table_row(out, 'train')
    assert row[8] == '1' and row[10] == '1'  # one repeat, one caption over 77 tokens
    assert row[9] == '3 / 92'  # tokens: 'red' + start/end; 90 words + start/end
    lists = tmp_path / 'work' / 'check_data'
    assert (lists / 'repeated_triplets_custom_train.txt').read_text().startswith('2\ta.png')
    assert (lists / 'captions_cut_custom_train.txt').read_text().split('\t')[:2] == ['b.png',
                                                                                      '92']
    code, out = check(capsys, tmp_path, '--cfg-options', f'data_root={root}', '--split',
                      'train', '--decode')
    assert code == 1 and table_row(out, 'train')[7] == '1'


def test_cirr_shows_the_share_of_a_complete_download(tmp_path):
    """The real val annotation files, 100 of their images present: the tool says which
    fraction is there and fails (CIRR evaluation needs the whole gallery)."""
    root = tmp_path / 'cirr_dataset'
    os.makedirs(root / 'cirr' / 'captions')
    os.makedirs(root / 'cirr' / 'image_splits')
    shutil.copy(shared_data('cirr', 'captions', 'cap.rc2.val.json'), root / 'cirr' / 'captions')
    shutil.copy(shared_data('cirr', 'image_splits', 'split.rc2.val.json'),
                root / 'cirr' / 'image_splits')
    rels = json.load(open(root / 'cirr' / 'image_splits' / 'split.rc2.val.json'))
    write_standin_images(str(root), dict(list(rels.items())[:100]))
    result_code = None
    try:
        run_tool([tool('check_data.py'), osp.join(PROJECT_ROOT, 'configs', 'cirr', 'ssn.py'),
                  '--split', 'val', '--work-dir', str(tmp_path / 'work'), '--cfg-options',
                  f'data_root={root}'], cwd=str(tmp_path))
    except AssertionError as err:  # run_tool fails on a non-zero exit, with the output
        result_code, out = 1, str(err)
    assert result_code == 1
    share = 100 * 100 / len(rels)
    assert f'CIRR val: 100 of the {len(rels)} images the annotation files name are present' \
        f' and readable ({share:.1f}% of a complete download)' in out
