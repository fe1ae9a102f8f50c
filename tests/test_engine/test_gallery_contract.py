"""The contract between dataset, hooks, model and metric, pinned in-process.

The gallery travels GalleryFeatureHook -> the loop's dataset (``gallery_dataset()``) -> the
model (``gallery_feat``) -> the metric (``set_gallery``); each query travels dataset item ->
PackCIRInputs (the dataset's META_KEYS) -> model (``query_feat``) -> metric (its READS).
"""
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from helpers import make_tiny_cirr, make_tiny_fiq, write_tiny_config
from ssn_plugin.datasets import CIRR, FashionIQ
from ssn_plugin.engine import GalleryFeatureHook, ImageSizeFromModelHook, encode_gallery
from ssn_plugin.evaluation import CIRRMetric, FashionIQMetric


@pytest.fixture
def runner(tmp_path, tiny_clip_file):
    data_root = str(tmp_path / 'cirr_dataset')
    make_tiny_cirr(data_root, num_images=11, num_train=4, num_val=7)
    cfg = Config.fromfile(write_tiny_config(tmp_path, data_root, tiny_clip_file))
    cfg.work_dir = str(tmp_path / 'work')
    return Runner.from_cfg(cfg)


def test_gallery_hook_hands_the_metric_the_dataset_gallery(runner):
    loop = runner.val_loop
    dataset = loop.dataloader.dataset
    ImageSizeFromModelHook().before_val(runner)
    GalleryFeatureHook(batch_size=4).before_val_epoch(runner)
    metric = loop.evaluator.metrics[0]
    assert metric.gallery_names == dataset.gallery_names
    assert metric.gallery_paths == [entry['img_path'] for entry in dataset.gallery]

    # Row i is gallery image i, encoded exactly as the model encodes it alone.
    gallery = dataset.gallery_dataset()
    model = runner.model.eval()
    with torch.no_grad():
        for i in (0, 5, len(gallery) - 1):
            item = gallery[i]
            assert item['data_samples'].gallery_index == i
            batch = model.data_preprocessor(
                dict(inputs=dict(img=[item['inputs']['img']]),
                     data_samples=[item['data_samples']]))
            alone = model.gallery_features(batch['inputs']['img'])[0]
            assert torch.allclose(metric.gallery_feats[i], alone, atol=1e-5)
    # The batch size does not change a feature or its row.
    assert torch.allclose(encode_gallery(runner, gallery, batch_size=1), metric.gallery_feats,
                          atol=1e-5)


@pytest.mark.parametrize('dataset_cls, metric_cls', [(CIRR, CIRRMetric),
                                                     (FashionIQ, FashionIQMetric)])
def test_datasets_pack_what_their_metric_reads(tmp_path, dataset_cls, metric_cls):
    model_sets = {'query_feat'}  # written by the model's predict
    needed = (set(metric_cls.READS) | set(metric_cls.SHOW_READS)) - model_sets
    assert needed <= set(dataset_cls.META_KEYS), needed - set(dataset_cls.META_KEYS)

    if dataset_cls is CIRR:
        root = str(tmp_path / 'cirr')
        make_tiny_cirr(root)
        dataset = CIRR(root, 'val', group_key='pairid', pipeline=[
            dict(type='LoadCIRImages', keys=('ref_img', )),
            dict(type='PackCIRInputs', keys=('ref_img', ))])
    else:
        root = str(tmp_path / 'fiq')
        make_tiny_fiq(root)
        dataset = FashionIQ(root, 'val', pipeline=[
            dict(type='ComposeFIQCaption'), dict(type='LoadCIRImages', keys=('ref_img', )),
            dict(type='PackCIRInputs', keys=('ref_img', ))])
    sample = dataset[0]['data_samples']
    assert needed <= set(sample.metainfo_keys()), needed - set(sample.metainfo_keys())


def test_a_test_run_gets_the_image_size_and_the_gallery_of_its_own_loop(tmp_path,
                                                                          tiny_clip_file):
    """``before_test`` / ``before_test_epoch`` prepare the test loop (what ``tools/test.py``
    runs), not the val loop: its resize steps left without a size get the model's, and its
    metric gets the gallery of the test dataset."""
    from ssn_plugin.datasets.base import pipeline_transforms
    from ssn_plugin.datasets.transforms import CLIPResizeCrop
    data_root = str(tmp_path / 'cirr_dataset')
    make_tiny_cirr(data_root, num_images=11, num_train=4, num_val=7)
    cfg = Config.fromfile(write_tiny_config(tmp_path, data_root, tiny_clip_file))
    cfg.work_dir = str(tmp_path / 'work')
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.pipeline[1] = dict(type='CLIPResizeCrop', keys=('ref_img', ))
    runner = Runner.from_cfg(cfg)

    def sizes(loop):
        return [t.size for t in pipeline_transforms(loop.dataloader.dataset)
                if isinstance(t, CLIPResizeCrop)]

    assert runner.test_loop.dataloader.dataset is not runner.val_loop.dataloader.dataset
    assert sizes(runner.test_loop) == sizes(runner.val_loop) == [None, 32]
    ImageSizeFromModelHook().before_test(runner)
    assert runner.model.image_size == (32, 32)
    assert sizes(runner.test_loop) == [32, 32] and sizes(runner.val_loop) == [None, 32]
    GalleryFeatureHook(batch_size=4).before_test_epoch(runner)
    test_metric, val_metric = (loop.evaluator.metrics[0]
                               for loop in (runner.test_loop, runner.val_loop))
    assert test_metric.gallery_names == runner.test_loop.dataloader.dataset.gallery_names
    assert len(test_metric.gallery_feats) == len(test_metric.gallery_names) == 11
    assert getattr(val_metric, 'gallery_feats', None) is None
