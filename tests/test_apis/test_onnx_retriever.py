"""The ONNX Runtime retriever ranks the demo gallery as CIRRetriever does: same pixels, same
tokens, same names in the same order, scores within 1e-4."""
import glob
import os
import os.path as osp

import numpy as np
import pytest
import torch

from helpers import PROJECT_ROOT, write_image
from ssn_plugin.apis import CIRRetriever
from ssn_plugin.apis.onnx_export import export_onnx
from ssn_plugin.apis.onnx_retriever import OnnxRetriever
from ssn_plugin.datasets import generate_shapes_dataset
from ssn_plugin.registry import MODELS

DEMO = osp.join(PROJECT_ROOT, 'configs', 'demo', 'ssn_shapes.py')


@pytest.fixture(scope='module')
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp('onnx_demo')
    generate_shapes_dataset(str(root / 'shapes'), num_train_sets=1, num_val_sets=4)
    paths = sorted(glob.glob(str(root / 'shapes' / 'dev' / '*.png')))
    # Photos of other sizes and shapes, so that the resize and the crop are exercised.
    for i, size in enumerate(((90, 50), (33, 120), (64, 64), (200, 150))):
        write_image(str(root / 'photos' / f'p{i}.png'), size=size, seed=i)
    paths += sorted(glob.glob(str(root / 'photos' / '*.png')))
    retriever = CIRRetriever(DEMO, device='cpu')
    torch.manual_seed(0)
    retriever.model.load_state_dict(MODELS.build(retriever.cfg.model).state_dict())
    retriever.model.eval()
    retriever.index(paths, progress=False)
    export_onnx(retriever.model, str(root / 'onnx'))
    onnx = OnnxRetriever(str(root / 'onnx'), batch_size=5).index(retriever.paths,
                                                                 retriever.names)
    torch.save(dict(state_dict=retriever.model.state_dict(), meta=dict(epoch=0)),
               str(root / 'model.pth'))
    return retriever, onnx, paths


def test_the_same_pixels_and_tokens(served):
    retriever, onnx, paths = served
    for path in paths[-4:] + paths[:1]:
        sample = retriever.pipeline(dict(img_path=path))
        batch = retriever.model.data_preprocessor(
            dict(inputs=dict(img=[sample['inputs']['img']]),
                 data_samples=[sample['data_samples']]))
        assert np.abs(onnx.pixels([path]) - batch['inputs']['img'].numpy()).max() < 1e-4
    texts = ['make it red', 'remove the small blue square and add a circle']
    assert np.array_equal(onnx.tokens(texts), retriever.model.clip.tokenize(texts)[0].numpy())


def test_the_same_gallery_features_and_rankings(served):
    retriever, onnx, paths = served
    assert np.abs(onnx.feats - retriever.feats.numpy()).max() < 1e-4
    for path, text in ((paths[0], 'make the red circle blue'), (paths[7], 'add a green square'),
                       (paths[-1], 'remove the large triangle')):
        expected = retriever.query(path, text, topk=10)
        got = onnx.query(path, text, topk=10)
        assert [n for n, _ in got] == [n for n, _ in expected]
        assert np.allclose([s for _, s in got], [s for _, s in expected], atol=1e-4)
        reference = retriever.names[retriever.paths.index(osp.realpath(path))]
        assert reference not in [n for n, _ in got]  # left out of its own ranking


def test_the_page_on_the_export_searches_as_on_the_model(served):
    """tools/demo_app.py --onnx DIR: the same gallery, digest and results as CONFIG CHECKPOINT."""
    import sys
    sys.path.insert(0, osp.join(PROJECT_ROOT, 'tools'))
    import demo_app
    from ssn_plugin.apis.web_demo import Reference
    retriever, _, paths = served
    root = osp.dirname(osp.dirname(osp.dirname(paths[0])))  # above shapes/dev/
    gallery = osp.join(root, 'shapes', 'dev')
    sessions = [demo_app.make_session(demo_app.parse_args(args)) for args in (
        [DEMO, osp.join(root, 'model.pth'), '--gallery', gallery, '--device', 'cpu'],
        ['--onnx', osp.join(root, 'onnx'), '--gallery', gallery])]
    torch_page, onnx_page = (s.retriever for s in sessions)
    assert onnx_page.names == torch_page.names and onnx_page.model_digest == \
        torch_page.model_digest
    name = torch_page.names[2]
    steps = [s.search(Reference(s.retriever.path_of(name), name), 'make it blue', 5, [])
             for s in sessions]
    assert [n for n, _ in steps[1][-1].results] == [n for n, _ in steps[0][-1].results]
    assert name not in [n for n, _ in steps[1][-1].results]
    with pytest.raises(SystemExit):
        demo_app.parse_args(['--onnx', 'x', DEMO, 'ckpt.pth', '--gallery', gallery])


def test_the_export_serves_an_index_folder_of_its_weights(served, tmp_path):
    """An index folder built with PyTorch (tools/build_index.py) is searched by the export:
    the same weights digest, the same ranking; the page takes it as --index."""
    import sys
    sys.path.insert(0, osp.join(PROJECT_ROOT, 'tools'))
    import demo_app
    retriever, onnx, paths = served
    index_dir = str(tmp_path / 'index')
    retriever.update_index_folder(index_dir, retriever.names, retriever.paths, progress=False)
    from_folder = OnnxRetriever(osp.dirname(onnx.meta_path)).load_index(index_dir)
    assert from_folder.names == retriever.names
    with_faiss = OnnxRetriever(osp.dirname(onnx.meta_path)).load_index(index_dir, backend='faiss')
    assert with_faiss.gallery.backend.name == 'faiss'
    assert [n for n, _ in with_faiss.query(paths[3], 'make it green', topk=6)] == \
        [n for n, _ in from_folder.query(paths[3], 'make it green', topk=6)]
    expected = onnx.query(paths[3], 'make it green', topk=6)
    got = from_folder.query(paths[3], 'make it green', topk=6)
    assert [n for n, _ in got] == [n for n, _ in expected]
    assert np.allclose([s for _, s in got], [s for _, s in expected], atol=1e-4)
    session = demo_app.make_session(demo_app.parse_args(
        ['--onnx', osp.dirname(onnx.meta_path), '--index', index_dir]))
    assert session.retriever.names == retriever.names and session.error is None
    other = str(tmp_path / 'other')
    CIRRetriever(DEMO, device='cpu').update_index_folder(other, retriever.names[:3],
                                                         retriever.paths[:3], progress=False)
    with pytest.raises(ValueError, match='built by a different model'):
        OnnxRetriever(osp.dirname(onnx.meta_path)).load_index(other)


SERVE_WITHOUT_TORCH = r'''
import json, sys

BLOCKED = ('torch', 'torchvision', 'open_clip', 'mmengine', 'mmcv', 'mmpretrain')


class Blocked:
    """Any import of the training stack fails, as on a machine where it is not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.partition('.')[0] in BLOCKED:
            raise ImportError(f'{name} is not installed here')


sys.meta_path.insert(0, Blocked())
sys.path.insert(0, TOOLS)
from ssn_plugin.apis import OnnxRetriever
import demo_app
from ssn_plugin.apis.web_demo import Reference, build_app

job = json.loads(sys.argv[1])
retriever = OnnxRetriever(job['export']).index(job['paths'], job['names'])
out = dict(rankings=[retriever.query(p, t, topk=10) for p, t in job['queries']])
half = OnnxRetriever(job['export']).load_index(job['index16'])
out['float16'] = [half.query(p, t, topk=10) for p, t in job['queries']]
session = demo_app.make_session(demo_app.parse_args(['--onnx', job['export'], '--gallery',
                                                     job['gallery']]))
name = session.retriever.names[2]
step = session.search(Reference(session.retriever.path_of(name), name), 'make it blue', 5, [])
out['page'] = [name, step[-1].results]
out['app'] = type(build_app(session)).__name__  # the Gradio page itself, built without torch
out['loaded'] = sorted(m for m in sys.modules if m.partition('.')[0] in BLOCKED)
print(json.dumps(out))
'''


def test_serving_needs_neither_torch_nor_open_clip_nor_mmengine(served, tmp_path):
    """In a process where torch, open_clip, mmengine, mmcv and mmpretrain cannot be imported,
    the export indexes, ranks as CIRRetriever does, searches a float16 index folder built by
    PyTorch, and serves the page (tools/demo_app.py --onnx)."""
    import json
    import subprocess
    import sys
    retriever, onnx, paths = served
    export = osp.dirname(onnx.meta_path)
    index16 = str(tmp_path / 'index16')
    retriever.update_index_folder(index16, retriever.names, retriever.paths, dtype='float16',
                                  progress=False)
    queries = [(paths[0], 'make the red circle blue'), (paths[7], 'add a green square'),
               (paths[-1], 'remove the large triangle')]
    gallery = osp.dirname(paths[0])
    job = dict(export=export, paths=retriever.paths, names=retriever.names, queries=queries,
               index16=index16, gallery=gallery)
    script = f'TOOLS = {osp.join(PROJECT_ROOT, "tools")!r}\n' + SERVE_WITHOUT_TORCH
    done = subprocess.run([sys.executable, '-c', script, json.dumps(job)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out['loaded'] == [] and out['app'] == 'Blocks'
    for (path, text), got in zip(queries, out['rankings']):
        expected = retriever.query(path, text, topk=10)
        assert [n for n, _ in got] == [n for n, _ in expected]
        assert np.allclose([s for _, s in got], [s for _, s in expected], atol=1e-4)
    # The float16 folder, searched here through torch's half matmul, there through numpy.
    half = OnnxRetriever(export).load_index(index16)
    for (path, text), got in zip(queries, out['float16']):
        expected = half.query(path, text, topk=10)
        assert [n for n, _ in got] == [n for n, _ in expected]
        assert np.allclose([s for _, s in got], [s for _, s in expected], atol=1e-5)
    name, results = out['page']
    page = OnnxRetriever(export).index(gallery)
    expected = page.query(page.path_of(name), 'make it blue', topk=5)
    assert [n for n, _ in results] == [n for n, _ in expected] and name not in \
        [n for n, _ in results]


def test_an_export_with_a_changed_or_missing_tokenizer_is_refused(served, tmp_path):
    import json
    import shutil
    _, onnx, _ = served
    export = str(tmp_path / 'export')
    shutil.copytree(osp.dirname(onnx.meta_path), export)
    meta = json.load(open(osp.join(export, 'export.json')))
    merges = osp.join(export, meta['tokenizer']['merges_file'])
    with open(merges, 'ab') as f:
        f.write(b'\x00')
    with pytest.raises(ValueError, match='merges file is missing or not the one exported'):
        OnnxRetriever(export)
    os.remove(merges)
    with pytest.raises(ValueError, match='merges file is missing'):
        OnnxRetriever(export)
    meta['tokenizer'] = 'open_clip.SimpleTokenizer'  # what an export of an older version says
    json.dump(meta, open(osp.join(export, 'export.json'), 'w'))
    with pytest.raises(ValueError, match=r'export\.json: "tokenizer" does not describe a '
                       r'ClipTokenizer.*export the checkpoint again'):
        OnnxRetriever(export)
