"""tools/build_index.py and the retriever over index folders, with a tiny SSN: incremental
updates, a real two-process build, the export, every backend behind retrieve.py."""
import os
import os.path as osp
import shutil
import subprocess

import numpy as np
import pytest
import torch
from mmengine.config import Config

from helpers import GALLERY_PIPELINE, QUERY_PIPELINE, TINY_CLIP, tiny_ssn_cfg, write_image
from helpers.tools import dist_env, run_tool, run_with_deadline, tool
from ssn_plugin.apis import CIRRetriever
from ssn_plugin.index import IndexFolder
from ssn_plugin.registry import MODELS


@pytest.fixture
def setup(tmp_path):
    cfg = Config(dict(
        model=tiny_ssn_cfg(TINY_CLIP),
        test_dataloader=dict(dataset=dict(type='CIRR', data_root='unused', split='val',
                                          pipeline=QUERY_PIPELINE,
                                          gallery_pipeline=GALLERY_PIPELINE))))
    config = str(tmp_path / 'tiny.py')
    cfg.dump(config)
    torch.manual_seed(0)
    model = MODELS.build(tiny_ssn_cfg(TINY_CLIP))
    ckpt = str(tmp_path / 'tiny.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict(epoch=1)), ckpt)
    gallery = tmp_path / 'gallery'
    for i in range(9):
        write_image(str(gallery / ('sub' if i % 3 == 0 else '') / f'img{i}.png'), seed=i)
    return config, ckpt, str(gallery)


def shards_of(root):
    folder = IndexFolder(root).open()
    return folder.manifest['shards'], folder.shards()


def test_retriever_updates_an_index_folder_encoding_only_what_changed(setup, tmp_path,
                                                                      monkeypatch):
    config, ckpt, gallery = setup
    retriever = CIRRetriever(config, ckpt, device='cpu', batch_size=4)
    index_dir = str(tmp_path / 'index')
    retriever.index(gallery, progress=False, index_dir=index_dir, shard_rows=4)
    assert sorted(retriever.names) == sorted(CIRRetriever(config, ckpt, device='cpu').index(
        gallery, progress=False).names)
    write_image(osp.join(gallery, 'new.png'), seed=99)
    os.remove(osp.join(gallery, 'img4.png'))
    encoded = []
    original = CIRRetriever.encode_images

    def counting(self, paths, *args, **kwargs):
        encoded.extend(osp.basename(p) for p in paths)
        return original(self, paths, *args, **kwargs)

    monkeypatch.setattr(CIRRetriever, 'encode_images', counting)
    retriever.index(gallery, progress=False, index_dir=index_dir, shard_rows=4)
    assert encoded == ['new.png']
    fresh = CIRRetriever(config, ckpt, device='cpu').index(gallery, progress=False)
    reference = osp.join(gallery, 'img1.png')
    got = retriever.query(reference, 'make it red', topk=5)
    want = fresh.query(reference, 'make it red', topk=5)
    assert [n for n, _ in got] == [n for n, _ in want]
    assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-5)
    assert 'img1.png' not in [n for n, _ in got]  # the reference is excluded from a folder too


def test_index_features_and_search_are_what_query_batch_does(setup):
    config, ckpt, gallery = setup
    built = CIRRetriever(config, ckpt, device='cpu').index(gallery, progress=False)
    other = CIRRetriever(config, ckpt, device='cpu').index_features(built.feats, built.names,
                                                                    built.paths)
    refs = [osp.join(gallery, 'img2.png'), osp.join(gallery, 'sub', 'img3.png')]
    texts = ['add a circle', 'make it blue']
    queries = built.encode_queries(refs, texts)
    searched = other.search(queries, topk=4, exclude=[['img2.png'], ['sub/img3.png']])
    assert searched == built.query_batch(refs, texts, topk=4)
    wide = torch.nn.functional.normalize(torch.randn(12, queries.shape[1]), dim=-1)
    bigger = CIRRetriever(config, ckpt, device='cpu').index_features(
        wide, [f'w{i}' for i in range(12)])
    assert [len(hits) for hits in bigger.search(queries)] == [10, 10]  # the default topk
    with pytest.raises(ValueError, match='NaN or inf'):
        other.index_features(torch.full((2, built.feats.shape[1]), float('nan')), ['a', 'b'])


def test_an_index_folder_of_other_weights_is_refused(setup, tmp_path):
    config, ckpt, gallery = setup
    index_dir = str(tmp_path / 'index')
    CIRRetriever(config, ckpt, device='cpu').index(gallery, progress=False, index_dir=index_dir)
    other = CIRRetriever(config, None, device='cpu')  # another initialisation
    with pytest.raises(ValueError, match='built by a different model'):
        other.load_index(index_dir)


def test_build_tool_with_faiss_and_export_serves_retrieve(setup, tmp_path):
    pytest.importorskip('faiss', reason='the faiss extra is not installed')
    config, ckpt, gallery = setup
    index_dir, export = str(tmp_path / 'index'), str(tmp_path / 'export')
    out = run_tool([tool('build_index.py'), config, ckpt, '--gallery', gallery, '--out',
                    index_dir, '--backend', 'faiss', '--backend-args', 'factory=Flat',
                    '--export', export, '--device', 'cpu'], str(tmp_path))
    assert '9 images; 9 encoded now (0 from an interrupted build), 0 removed, 0 unreadable' in out
    assert osp.isfile(osp.join(index_dir, 'faiss.index'))
    feats = np.load(osp.join(export, 'features.npy'))
    table = open(osp.join(export, 'table.tsv')).read().splitlines()
    assert feats.shape[0] == 9 and len(table) == 10 and table[0] == 'id\tname\tpath'
    reference = osp.join(gallery, 'img2.png')
    lines = {}
    for backend in ('exact', 'faiss'):
        out = run_tool([tool('retrieve.py'), config, ckpt, '--index', index_dir, '--image',
                        reference, '--text', 'make it red', '--topk', '3', '--backend', backend,
                        '--backend-args', 'factory=Flat'][:None if backend == 'faiss' else -2]
                       + ['--device', 'cpu'], str(tmp_path))
        lines[backend] = [line for line in out.splitlines() if '.png' in line]
    assert lines['exact'] == lines['faiss'] and len(lines['exact']) == 4  # query + 3 rows
    # Run again: nothing to encode.
    out = run_tool([tool('build_index.py'), config, ckpt, '--gallery', gallery, '--out',
                    index_dir, '--device', 'cpu'], str(tmp_path))
    assert '9 images; 0 encoded now' in out


def test_build_tool_lists_unreadable_files(setup, tmp_path):
    config, ckpt, gallery = setup
    with open(osp.join(gallery, 'broken.png'), 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n truncated')
    index_dir = str(tmp_path / 'index')
    args = [tool('build_index.py'), config, ckpt, '--gallery', gallery, '--out', index_dir,
            '--device', 'cpu']
    import sys
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True)
    assert result.returncode != 0
    assert '1 of 10 gallery files cannot be read' in result.stderr and 'broken.png' in \
        result.stderr
    out = run_tool(args + ['--skip-unreadable'], str(tmp_path))
    assert '9 images; 1 encoded now' in out and '1 unreadable' in out  # only the broken one


def test_two_process_build_equals_one_process_build(setup, tmp_path):
    config, ckpt, gallery = setup
    one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
    env = dist_env()
    common = ['--gallery', gallery, '--shard-rows', '2', '--batch-size', '2']
    subprocess.run([env['PYTHON'], tool('build_index.py'), config, ckpt, '--out', one,
                    '--device', 'cpu', *common], check=True, env=env, capture_output=True)
    result = run_with_deadline(['bash', tool('dist_build_index.sh'), config, ckpt, '2', '--out',
                                two, '--device', 'cpu', *common], env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    manifest_one, shards_one = shards_of(one)
    manifest_two, shards_two = shards_of(two)
    assert manifest_one == manifest_two and len(manifest_one) == 5
    for a, b in zip(shards_one, shards_two):
        assert a.entries == b.entries
        assert np.allclose(a.feats, b.feats, atol=1e-6)
    shutil.rmtree(osp.join(two, 'parts'))


def test_an_index_folder_of_a_dataset_gallery_and_of_unreadable_files(setup, tmp_path,
                                                                      tiny_cirr):
    config, ckpt, gallery = setup
    from ssn_plugin.datasets import CIRR
    dataset = CIRR(tiny_cirr['root'], 'val', pipeline=[], gallery_pipeline=[])
    retriever = CIRRetriever(config, ckpt, device='cpu')
    retriever.index(dataset, progress=False, index_dir=str(tmp_path / 'cirr_index'))
    assert retriever.names == dataset.gallery_names
    assert retriever.paths == [osp.realpath(e['img_path']) for e in dataset.gallery]
    with open(osp.join(gallery, 'broken.png'), 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n truncated')
    with pytest.raises(OSError, match='1 of 10 gallery files cannot be read'):
        retriever.index(gallery, progress=False, index_dir=str(tmp_path / 'photos'))
    retriever.index(gallery, progress=False, index_dir=str(tmp_path / 'photos'),
                    skip_unreadable=True, backend=dict(type='exact', chunk_elems=4))
    assert list(retriever.skipped) == [osp.realpath(osp.join(gallery, 'broken.png'))]
    assert len(retriever.names) == 9 and retriever.gallery.backend.chunk_elems == 4
