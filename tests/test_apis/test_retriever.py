"""The query-your-own-gallery API, its CLI and the retrieval pictures."""
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

from helpers import GALLERY_PIPELINE, PROJECT_ROOT, QUERY_PIPELINE, TINY_CLIP, tiny_ssn_cfg, \
    write_image
from ssn_plugin.apis import CIRRetriever, draw_retrieval_grid
from ssn_plugin.visualization import BORDER, LABEL_HEIGHT, QUERY_COLOUR, TRUTH_COLOUR
from ssn_plugin.datasets import CIRR
from ssn_plugin.evaluation import CIRRMetric
from ssn_plugin.registry import MODELS


def tiny_cfg(data_root='unused'):
    return Config(dict(
        model=tiny_ssn_cfg(TINY_CLIP),
        test_dataloader=dict(dataset=dict(type='CIRR', data_root=data_root, split='val',
                                          pipeline=QUERY_PIPELINE,
                                          gallery_pipeline=GALLERY_PIPELINE))))


@pytest.fixture
def gallery_dir(tmp_path):
    folder = tmp_path / 'gallery'
    for i in range(7):
        write_image(str(folder / ('sub' if i % 2 else '') / f'img{i}.png'), seed=i)
    (folder / 'notes.txt').write_text('not an image')
    return str(folder)


def save_checkpoint(path, seed=0):
    torch.manual_seed(seed)
    model = MODELS.build(tiny_ssn_cfg(TINY_CLIP))
    torch.save(dict(state_dict=model.state_dict(), meta=dict(epoch=1)), path)
    return path


def test_index_save_load_query_round_trip(tmp_path, gallery_dir):
    ckpt = save_checkpoint(str(tmp_path / 'a.pth'))
    retriever = CIRRetriever(tiny_cfg(), ckpt, device='cpu', batch_size=3)
    retriever.index(gallery_dir, progress=False)
    assert len(retriever.names) == 7 and 'sub/img1.png' in retriever.names
    reference = osp.join(gallery_dir, 'img0.png')
    before = retriever.query(reference, 'make it red', topk=4)
    assert len(before) == 4
    assert 'img0.png' not in [name for name, _ in before]  # the reference itself is excluded
    scores = [s for _, s in before]
    assert scores == sorted(scores, reverse=True)
    index_file = str(tmp_path / 'index.pth')
    retriever.save_index(index_file)

    fresh = CIRRetriever(tiny_cfg(), ckpt, device='cpu').load_index(index_file)
    after = fresh.query(reference, 'make it red', topk=4)
    assert [n for n, _ in after] == [n for n, _ in before]
    assert np.allclose([s for _, s in after], scores, atol=1e-6)
    # Batch form and an in-memory image give the same answers.
    batch = fresh.query_batch([reference, reference], ['make it red', 'make it blue'], topk=4)
    assert [n for n, _ in batch[0]] == [n for n, _ in before]
    with Image.open(reference) as img:
        in_memory = fresh.query(img.copy(), 'make it red', topk=5)
    assert [n for n, _ in in_memory][:4] != [] and len(in_memory) == 5


def test_mismatched_model_is_refused(tmp_path, gallery_dir):
    retriever = CIRRetriever(tiny_cfg(), save_checkpoint(str(tmp_path / 'a.pth'), seed=0),
                             device='cpu')
    retriever.index(gallery_dir, progress=False)
    retriever.save_index(str(tmp_path / 'index.pth'))
    other = CIRRetriever(tiny_cfg(), save_checkpoint(str(tmp_path / 'b.pth'), seed=1),
                         device='cpu')
    with pytest.raises(ValueError, match='built by a different model'):
        other.load_index(str(tmp_path / 'index.pth'))


def test_bad_inputs(tmp_path, gallery_dir):
    retriever = CIRRetriever(tiny_cfg(), device='cpu')
    with pytest.raises(FileNotFoundError, match='index file not found'):
        retriever.load_index(str(tmp_path / 'missing.pth'))
    with pytest.raises(RuntimeError, match='no gallery indexed'):
        retriever.query(osp.join(gallery_dir, 'img0.png'), 'x')
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(ValueError, match='empty gallery'):
        retriever.index(str(empty), progress=False)
    with pytest.raises(FileNotFoundError, match='gallery folder not found'):
        retriever.index(str(tmp_path / 'nope'), progress=False)
    broken = tmp_path / 'broken'
    broken.mkdir()
    (broken / 'bad.png').write_bytes(b'not a png')
    with pytest.raises(OSError, match='cannot read image .*bad.png'):
        retriever.index(str(broken), progress=False)
    (tmp_path / 'junk.pth').write_bytes(b'junk')
    with pytest.raises(Exception):
        retriever.load_index(str(tmp_path / 'junk.pth'))


def test_api_ranks_a_dataset_query_like_the_metric(tmp_path, tiny_cirr):
    root = tiny_cirr['root']
    retriever = CIRRetriever(tiny_cfg(root), device='cpu')
    dataset = CIRR(root, 'val', pipeline=QUERY_PIPELINE)
    retriever.index(dataset, progress=False)
    # The metric path: dataset pipeline + model predict for queries, index feats as gallery.
    metric = CIRRMetric(export_dir=str(tmp_path / 'export'))
    metric.set_gallery(retriever.feats, retriever.names)
    model = retriever.model
    for i in range(len(dataset)):
        sample = dataset[i]
        data = model.data_preprocessor(dict(inputs=dict(ref_img=[sample['inputs']['ref_img']]),
                                            data_samples=[sample['data_samples']]), False)
        with torch.no_grad():
            out = model(**data, mode='predict')[0]
        metric.process(None, [dict(out.to_dict(), **out.metainfo)])
    metric.evaluate(len(dataset))
    import json
    exported = json.load(open(tmp_path / 'export' / 'recall_submission_ssn.json'))
    for i in (0, 5, 11):
        item = dataset.get_data_info(i)
        got = retriever.query(item['ref_img_path'], item['text'], topk=10)
        assert [n for n, _ in got] == exported[str(item['pairid'])][:10]


def test_grid_layout(tmp_path):
    ref = Image.new('RGB', (40, 20), (255, 0, 0))
    results = [(Image.new('RGB', (30, 30), (0, 0, 255)), f'n{i}', 0.9 - i / 10)
               for i in range(4)]
    grid = draw_retrieval_grid(ref, 'make it blue', results, ground_truth='n2', tile=32)
    cell = 32 + 2 * BORDER
    assert grid.width == 5 * cell
    text_height = grid.height - cell - LABEL_HEIGHT
    assert text_height > 0
    pixels = np.asarray(grid)
    frame = lambda col: tuple(pixels[text_height + 1, col * cell + 1])  # noqa: E731
    assert frame(0) == QUERY_COLOUR
    assert frame(3) == TRUTH_COLOUR  # n2 is the third result, fourth tile
    assert frame(1) != TRUTH_COLOUR and frame(2) != TRUTH_COLOUR
    # The reference tile shows the red image, the result tiles blue ones.
    centre = text_height + cell // 2
    assert tuple(pixels[centre, cell // 2]) == (255, 0, 0)
    assert tuple(pixels[centre, cell + cell // 2]) == (0, 0, 255)


@pytest.mark.slow
def test_cli_end_to_end(tmp_path, gallery_dir):
    config = tmp_path / 'cfg.py'
    tiny_cfg().dump(str(config))
    ckpt = save_checkpoint(str(tmp_path / 'a.pth'))
    tool = osp.join(PROJECT_ROOT, 'tools', 'retrieve.py')
    reference = osp.join(gallery_dir, 'img0.png')
    index_file, picture = str(tmp_path / 'idx.pth'), str(tmp_path / 'grid.png')
    first = subprocess.run(
        [sys.executable, tool, str(config), ckpt, '--gallery', gallery_dir, '--image',
         reference, '--text', 'add a hat', '--topk', '3', '--save-index', index_file, '--out',
         picture, '--device', 'cpu'], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    table = lambda out: [line for line in out.splitlines()  # noqa: E731
                         if line.startswith('|') and '.png' in line]
    assert 'against 7 images' in first.stdout and len(table(first.stdout)) == 3
    with Image.open(picture) as grid:
        assert grid.width == 4 * (128 + 2 * BORDER)
    second = subprocess.run(
        [sys.executable, tool, str(config), ckpt, '--index', index_file, '--image', reference,
         '--text', 'add a hat', '--topk', '3', '--device', 'cpu'], capture_output=True,
        text=True)
    assert second.returncode == 0, second.stderr[-3000:]
    assert table(second.stdout) == table(first.stdout)


@pytest.mark.parametrize('sized', [True, False], ids=['explicit-size', 'size-from-model'])
def test_indexing_a_dataset_reads_its_image_cache(tmp_path, tiny_cirr, sized):
    root = tiny_cirr['root']
    retriever = CIRRetriever(tiny_cfg(root), device='cpu')
    # As in the recipes, CLIPResizeCrop may leave its size to the model, in both pipelines.
    query, gallery = ((QUERY_PIPELINE, GALLERY_PIPELINE) if sized else
                      ([{k: v for k, v in t.items() if k != 'size'} for t in p]
                       for p in (QUERY_PIPELINE, GALLERY_PIPELINE)))
    plain = CIRR(root, 'val', pipeline=QUERY_PIPELINE, gallery_pipeline=GALLERY_PIPELINE,
                 report_dir=str(tmp_path))
    expected = retriever.index(plain, progress=False).feats.clone()
    cached = CIRR(root, 'val', pipeline=query, gallery_pipeline=gallery,
                  report_dir=str(tmp_path), image_cache=str(tmp_path / 'cache'))
    retriever.index(cached, progress=False)
    assert len(list((tmp_path / 'cache').iterdir())) == 1  # built on first use
    assert torch.equal(retriever.feats, expected)  # the same pixels, the same features
    assert retriever.names == plain.gallery_names


@pytest.mark.parametrize('call, message', [
    (lambda r, img: r.query(img, 'make it red', topk=0), 'topk must be a positive int, got 0'),
    (lambda r, img: r.query(img, 'make it red', topk=-1), 'topk must be a positive int'),
    (lambda r, img: r.query(img, 'make it red', topk=2.5), 'topk must be a positive int'),
    (lambda r, img: r.query_batch([], []), 'got no queries'),
    (lambda r, img: r.query_batch([img, img], ['a']), 'got 2 images and 1 texts'),
])
def test_degenerate_queries_get_clear_errors(tmp_path, gallery_dir, call, message):
    """Issue 24: topk=0, topk=-1, an empty or mismatched query batch."""
    retriever = CIRRetriever(tiny_cfg(), device='cpu').index(gallery_dir, progress=False)
    with pytest.raises(ValueError, match=message):
        call(retriever, osp.join(gallery_dir, 'img0.png'))


def test_a_reference_through_a_symlink_or_listed_twice_is_not_its_own_hit(tmp_path):
    for i in range(4):
        write_image(str(tmp_path / 'g' / f'{i}.png'), seed=i)
    os.symlink(tmp_path / 'g', tmp_path / 'linked')
    os.makedirs(tmp_path / 'top')
    os.symlink(tmp_path / 'g', tmp_path / 'top' / 'sub')  # a symlinked sub-folder
    retriever = CIRRetriever(tiny_cfg(), device='cpu')
    assert len(retriever.index(str(tmp_path / 'top'), progress=False).names) == 4
    twice = [str(tmp_path / 'g' / '0.png'), str(tmp_path / 'linked' / '0.png'),
             str(tmp_path / 'g' / '1.png')]
    assert len(retriever.index(twice, progress=False).names) == 2  # one file, once
    hits = retriever.query(str(tmp_path / 'linked' / '0.png'), 'make it red', topk=5)
    assert [name for name, _ in hits] == [twice[2]]  # the other file, not 0.png again


def test_own_triplets_index_and_rank_like_cirr(tmp_path, tiny_cirr):
    """The retriever takes CustomCIRDataset as it takes CIRR: the same files, the same hits."""
    from helpers import cirr_as_triplets
    from ssn_plugin.datasets import CustomCIRDataset
    root = tiny_cirr['root']
    results = []
    for dataset in (CIRR(root, 'val', pipeline=QUERY_PIPELINE),
                    CustomCIRDataset(**cirr_as_triplets(root, tiny_cirr, 'val'),
                                     pipeline=QUERY_PIPELINE)):
        torch.manual_seed(0)  # the same (random) model for both
        retriever = CIRRetriever(tiny_cfg(root), device='cpu')
        retriever.index(dataset, progress=False)
        path_of = {g['name']: g['img_path'] for g in dataset.gallery}
        item = dataset.get_data_info(3)
        results.append([path_of[n] for n, _ in retriever.query(item['ref_img_path'],
                                                               item['text'], topk=8)])
    assert results[0] == results[1]


def test_saved_indexes_and_index_folders_keep_what_they_claim(tmp_path, gallery_dir,
                                                             monkeypatch):
    """An index file holds its format, the project version and each file's stamp, and gives
    them back with the backend asked for; a file of another format, a list, or paths and stamps
    that are not two lists of one length are refused by name. An index folder keeps the
    shard size and version it was built with, refuses other weights, and shows a progress bar
    that reaches the gallery's size."""
    import io

    from mmengine.utils import ProgressBar

    from ssn_plugin.apis import retriever as retriever_module
    from ssn_plugin.image_io import file_stamp
    from ssn_plugin.index import IndexFolder
    from ssn_plugin.version import __version__
    ckpt = save_checkpoint(str(tmp_path / 'a.pth'))
    retriever = CIRRetriever(tiny_cfg(), ckpt, device='cpu').index(gallery_dir, progress=False)
    index_file = str(tmp_path / 'index.pth')
    retriever.save_index(index_file)
    content = torch.load(index_file, weights_only=True)
    assert content['format'] == 2 and content['version'] == __version__
    assert content['stamps'] == [file_stamp(p) for p in retriever.paths]
    loaded = CIRRetriever(tiny_cfg(), ckpt, device='cpu').load_index(index_file, backend='faiss')
    assert loaded.gallery.backend.name == 'faiss'
    assert [loaded.gallery.entry(i)[2] for i in loaded.gallery.ids] == content['stamps']

    def rewritten(**changes):
        path = str(tmp_path / 'changed.pth')
        torch.save(changes.pop('whole', None) or dict(content, **changes), path)
        return path

    for bad in (rewritten(format=1), rewritten(whole=[content])):
        with pytest.raises(ValueError, match='is not an ssn_plugin index of format 2'):
            retriever.load_index(bad)
    for bad in (rewritten(stamps=content['stamps'][:-1]), rewritten(paths=tuple(content['paths']))):
        with pytest.raises(ValueError, match='rebuild it:\npaths and stamps are not two lists '
                           'of one length$'):
            retriever.load_index(bad)

    bars = []

    class Bar(ProgressBar):  # mmengine's bar, kept to count what it was told
        def __init__(self, task_num):
            super().__init__(task_num, file=io.StringIO())
            bars.append(self)

    monkeypatch.setattr(retriever_module, 'ProgressBar', Bar)
    folder = str(tmp_path / 'folder')
    retriever.index(gallery_dir, index_dir=folder, shard_rows=2, dtype='float16')
    assert [(b.task_num, b.completed) for b in bars] == [(7, 7)]  # the bar reached all 7
    manifest = IndexFolder(folder).open().manifest
    assert [s['rows'] for s in manifest['shards']] == [2, 2, 2, 1]
    assert manifest['version'] == __version__ and manifest['dtype'] == 'float16'
    other = CIRRetriever(tiny_cfg(), save_checkpoint(str(tmp_path / 'b.pth'), seed=1),
                         device='cpu')
    with pytest.raises(ValueError, match='built by a different model'):
        other.update_index_folder(folder, retriever.names, retriever.paths, progress=False)
    commits = []
    retriever.update_index_folder(str(tmp_path / 'quiet'), retriever.names, retriever.paths,
                                  progress=False, on_commit=commits.append)
    assert commits  # the caller hears of each committed chunk
    retriever.update_index_folder(str(tmp_path / 'default'), retriever.names, retriever.paths)
    assert [(b.task_num, b.completed) for b in bars] == [(7, 7), (7, 7)]  # by default, a bar


def test_every_unreadable_gallery_file_is_listed_on_its_own_line(tmp_path, gallery_dir):
    for name in ('bad1.png', 'bad2.png'):
        (tmp_path / 'gallery' / name).write_bytes(b'not a png')
    with pytest.raises(OSError) as err:
        CIRRetriever(tiny_cfg(), device='cpu').index(gallery_dir, progress=False)
    lines = str(err.value).splitlines()
    assert lines[0] == '2 of 9 gallery files cannot be read:'
    assert [line.split(': ')[0] for line in lines[1:3]] == [
        '  ' + osp.realpath(osp.join(gallery_dir, n)) for n in ('bad1.png', 'bad2.png')]
    assert lines[3] == '(skip_unreadable=True leaves them out, listed)'
