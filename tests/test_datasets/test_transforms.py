"""Image transforms: CLIP resize/crop, TargetPad, packing."""
import numpy as np
import pytest
import torch
from PIL import Image

from ssn_plugin.datasets.transforms import (CLIPResizeCrop, LoadCIRImages, PackCIRInputs,
                                            TargetPad, target_pad_amounts)
from ssn_plugin.registry import TRANSFORMS


def solid(width, height, value=200):
    return Image.fromarray(np.full((height, width, 3), value, dtype=np.uint8))


@pytest.mark.parametrize('size, expected', [
    ((100, 50), (0, 15)),    # ratio 2: pad height to 100 / 1.25 = 80
    ((50, 100), (15, 0)),
    ((110, 100), (0, 0)),    # ratio 1.1 < 1.25: unchanged
    ((125, 100), (0, 0)),    # ratio exactly 1.25: goal 100 -> nothing to add
])
def test_target_pad_amounts(size, expected):
    assert target_pad_amounts(*size, 1.25) == expected


def test_target_pad_then_resize_crop():
    pipeline = [TRANSFORMS.build(dict(type='TargetPad', target_ratio=1.25, keys=('img', ))),
                TRANSFORMS.build(dict(type='CLIPResizeCrop', size=16, keys=('img', )))]
    results = dict(img=solid(100, 50))
    padded = pipeline[0](dict(results))['img']
    assert padded.size == (100, 80)
    assert np.asarray(padded)[0, 50].tolist() == [0, 0, 0]      # black padding on top
    assert np.asarray(padded)[40, 50].tolist() == [200, 200, 200]
    out = pipeline[1](pipeline[0](dict(results)))['img']
    assert out.size == (16, 16)


def test_clip_resize_crop_keeps_center():
    image = np.zeros((30, 60, 3), dtype=np.uint8)
    image[:, 15:45] = 255  # the central square is white
    out = CLIPResizeCrop(size=10, keys=('img', ))(dict(img=Image.fromarray(image)))['img']
    assert out.size == (10, 10)
    assert np.asarray(out).min() > 200


def test_load_and_pack(tmp_path):
    path = tmp_path / 'a.png'
    solid(12, 8, 7).save(path)
    results = LoadCIRImages(keys=('ref_img', 'tgt_img'))(
        dict(ref_img_path=str(path), tgt_img_path=None, text='t', pairid=3))
    assert results['ref_img_shape'] == (8, 12) and results['tgt_img'] is None
    packed = PackCIRInputs(keys=('ref_img', 'tgt_img'), meta_keys=('text', 'pairid'))(results)
    assert set(packed['inputs']) == {'ref_img'}
    assert packed['inputs']['ref_img'].shape == (3, 8, 12)
    assert packed['inputs']['ref_img'].dtype == torch.uint8
    assert int(packed['inputs']['ref_img'][0, 0, 0]) == 7
    assert packed['data_samples'].text == 't' and packed['data_samples'].pairid == 3


def test_missing_path_key_and_file(tmp_path):
    with pytest.raises(KeyError, match='needs "tgt_img_path"'):
        LoadCIRImages(keys=('tgt_img', ))(dict(ref_img_path='x'))
    with pytest.raises(FileNotFoundError, match='nope.png'):
        LoadCIRImages(keys=('img', ))(dict(img_path=str(tmp_path / 'nope.png')))
