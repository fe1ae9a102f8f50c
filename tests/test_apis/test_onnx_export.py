"""ONNX export: the graphs run in ONNX Runtime reproduce gallery_features and query_features
(from captions, through the tokenizer) within 1e-4, for SSN and the CLIP baseline, batch 1 and
3, captions of different lengths in one batch; the tool writes what a server needs and refuses
another architecture's checkpoint."""
import hashlib
import json
import os.path as osp

import numpy as np
import onnxruntime as ort
import pytest
import torch
from mmengine.config import Config

from helpers import PROJECT_ROOT, TINY_CLIP, run_tool, tiny_ssn_cfg, tool
from ssn_plugin.apis.onnx_export import export_onnx
from ssn_plugin.models.clip_backbone import skip_pretrained_weights
from ssn_plugin.registry import MODELS

CAPTIONS = ['make it red', 'remove the dog, add two cats on the left and make the sky darker',
            'bigger']


def onnx_features(out_dir, model, images, captions):
    options = dict(providers=['CPUExecutionProvider'])
    gallery = ort.InferenceSession(osp.join(out_dir, 'gallery_encoder.onnx'), **options)
    query = ort.InferenceSession(osp.join(out_dir, 'query_composer.onnx'), **options)
    tokens = model.clip.tokenize(captions)[0].numpy().astype(np.int64)
    return (gallery.run(None, {'image': images.numpy()})[0],
            query.run(None, {'image': images.numpy(), 'text_tokens': tokens})[0])


def check_parity(model, out_dir):
    """ONNX Runtime against the PyTorch text path, batch 1 and 3, on new inputs."""
    height, width = model.image_size
    for batch in (1, 3):
        images = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(7))
        captions = CAPTIONS[:batch] if batch > 1 else CAPTIONS[1:2]
        feature, query = onnx_features(out_dir, model, images, captions)
        with torch.no_grad():
            expected_feature = model.gallery_features(images)
            expected_query = model.query_features(images, captions)
        assert feature.shape == tuple(expected_feature.shape)
        assert np.abs(feature - expected_feature.numpy()).max() < 1e-4
        assert np.abs(query - expected_query.numpy()).max() < 1e-4


@pytest.mark.parametrize('kind', ['SSN', 'CLIPBaseline'])
def test_tiny_models_export_with_parity(tmp_path, kind):
    torch.manual_seed(0)
    cfg = tiny_ssn_cfg(TINY_CLIP) if kind == 'SSN' else dict(
        type='CLIPBaseline', backbone=dict(type='OpenCLIPBackbone', arch=TINY_CLIP,
                                           pretrained=None))
    model = MODELS.build(cfg)
    written = export_onnx(model, str(tmp_path))
    check_parity(model, str(tmp_path))
    meta = json.load(open(written['meta']))
    assert meta['model'] == kind and meta['image_size'] == list(model.image_size)
    assert meta['context_length'] == model.clip.context_length
    assert meta['feature_dim'] == model.gallery_features(torch.zeros(1, 3, 32, 32)).shape[1]
    assert meta['pixel_mean'] == pytest.approx(model.data_preprocessor.mean.flatten().tolist())
    assert max(meta['max_abs_difference'].values()) < 1e-4 and not model.training
    # Who wrote it and which weights: the version, the EOT id, SHA-256 over the state dict
    # (names and bytes, in order, written out here), no checkpoint given.
    from ssn_plugin.version import __version__
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    assert meta['project_version'] == __version__ and meta['opset'] == 17
    assert meta['eot_token_id'] == model.clip.tokenizer.eot_token_id == 49407
    assert meta['weights_sha256'] == digest.hexdigest() and meta['checkpoint'] is None
    merges = osp.join(str(tmp_path), 'bpe_simple_vocab_16e6.txt.gz')
    assert meta['tokenizer'] == dict(
        type='ClipTokenizer', merges_file='bpe_simple_vocab_16e6.txt.gz',
        merges_sha256=hashlib.sha256(open(merges, 'rb').read()).hexdigest(), clean='lower',
        special_tokens=['<start_of_text>', '<end_of_text>'],
        context_length=model.clip.context_length, sot_token_id=49406)
    ckpt = tmp_path / 'weights.pth'
    ckpt.write_bytes(b'any bytes stand for the checkpoint file here')
    meta = json.load(open(export_onnx(model, str(tmp_path / 'with_ckpt'),
                                      checkpoint=str(ckpt))['meta']))
    assert meta['checkpoint'] == dict(path='weights.pth',
                                      sha256=hashlib.sha256(ckpt.read_bytes()).hexdigest())


def test_an_export_is_reproducible_and_uses_opset_17(tmp_path):
    """The same weights give byte-identical graphs and export.json (the check inputs are
    seeded); the default opset is 17, in the graphs and in export.json; the graphs' inputs and
    outputs carry the documented names."""
    import onnx
    torch.manual_seed(0)
    model = MODELS.build(tiny_ssn_cfg(TINY_CLIP))
    first, second = (export_onnx(model, str(tmp_path / name)) for name in ('a', 'b'))
    for key in ('gallery_encoder', 'query_composer', 'meta', 'tokenizer'):
        assert open(first[key], 'rb').read() == open(second[key], 'rb').read(), key
    assert json.load(open(first['meta']))['opset'] == 17
    names = dict(gallery_encoder=(['image'], ['feature']),
                 query_composer=(['image', 'text_tokens'], ['query']))
    for key, (inputs, outputs) in names.items():
        graph = onnx.load(first[key])
        assert [o.version for o in graph.opset_import if o.domain in ('', 'ai.onnx')] == [17]
        # The names a server feeds and reads (README, "Export to ONNX").
        assert [i.name for i in graph.graph.input] == inputs
        assert [o.name for o in graph.graph.output] == outputs


def test_a_difference_equal_to_the_tolerance_is_accepted(tmp_path):
    """"More than the tolerance" refuses: an export whose largest difference is exactly the
    tolerance is written (the export is reproducible, so its difference is known)."""
    torch.manual_seed(0)
    model = MODELS.build(tiny_ssn_cfg(TINY_CLIP))
    first = json.load(open(export_onnx(model, str(tmp_path / 'a'))['meta']))
    worst = max(first['max_abs_difference'].values())
    assert worst > 0
    again = json.load(open(export_onnx(model, str(tmp_path / 'b'), tolerance=worst)['meta']))
    assert again['max_abs_difference'] == first['max_abs_difference']


def test_export_refuses_graphs_that_differ(tmp_path):
    """The exporter's own check: a tolerance no float graph meets writes nothing."""
    torch.manual_seed(0)
    model = MODELS.build(tiny_ssn_cfg(TINY_CLIP))
    with pytest.raises(RuntimeError, match='differs from PyTorch by .* not written'):
        export_onnx(model, str(tmp_path), tolerance=0.0)
    assert not list(tmp_path.glob('*.onnx'))


@pytest.mark.slow
def test_vit_b32_recipe_exports_with_parity(tmp_path):
    """The CIRR recipe's architecture (ViT-B/32, random init: no download)."""
    cfg = Config.fromfile(osp.join(PROJECT_ROOT, 'configs', 'cirr', 'ssn.py')).model
    skip_pretrained_weights(cfg)
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    export_onnx(model, str(tmp_path))
    check_parity(model, str(tmp_path))


def write_tiny_model_config(path, ffn_dim=64):
    path.write_text(f"""
model = {tiny_ssn_cfg(TINY_CLIP, fusion=dict(type='SSNFusion', num_heads=2, ffn_dim=ffn_dim))!r}
test_dataloader = dict(dataset=dict(gallery_pipeline=[
    dict(type='LoadCIRImages', keys=('img', )), dict(type='CLIPResizeCrop', keys=('img', )),
    dict(type='PackCIRInputs', keys=('img', ))]))
""")
    return str(path)


def test_the_tool_writes_the_graphs_and_refuses_another_architecture(tmp_path):
    config = write_tiny_model_config(tmp_path / 'tiny.py')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(config).model)
    ckpt = str(tmp_path / 'model.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict(epoch=1)), ckpt)
    out = run_tool([tool('export_onnx.py'), config, ckpt, '--out', str(tmp_path / 'onnx')],
                   cwd=str(tmp_path))
    assert 'largest difference from PyTorch' in out
    meta = json.load(open(tmp_path / 'onnx' / 'export.json'))
    assert meta['checkpoint'] == dict(path='model.pth',
                                      sha256=hashlib.sha256(open(ckpt, 'rb').read()).hexdigest())
    model.eval()
    check_parity(model, str(tmp_path / 'onnx'))
    other = write_tiny_model_config(tmp_path / 'wide.py', ffn_dim=128)
    with pytest.raises(AssertionError) as err:
        run_tool([tool('export_onnx.py'), other, ckpt, '--out', str(tmp_path / 'wide')],
                 cwd=str(tmp_path))
    assert 'the checkpoint does not fit the model of this config' in str(err.value)
    assert not (tmp_path / 'wide').exists()


def test_a_missing_extra_names_the_install(monkeypatch, tmp_path):
    """Without onnxruntime (the core install), export and serving say which extra to add."""
    import sys
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)  # import now raises ImportError
    from ssn_plugin.apis import OnnxRetriever
    model = MODELS.build(tiny_ssn_cfg(TINY_CLIP))
    for call in (lambda: export_onnx(model, str(tmp_path)), lambda: OnnxRetriever(str(tmp_path))):
        with pytest.raises(ImportError, match=r'pip install -e "\.\[export\]"'):
            call()
