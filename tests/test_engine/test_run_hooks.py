"""GalleryFeatureHook and ImageSizeFromModelHook with stand-in runners: what the gallery loader
is built with, how features are put in gallery order, which metric gets what, which loop a
hook prepares and what it says. The same hooks in real runs: ``test_gallery_contract.py``."""
import os
import os.path as osp
from collections import deque
from types import SimpleNamespace

import pytest
import torch

from ssn_plugin.engine.hooks import gallery_feature_hook as gallery_hook
from ssn_plugin.engine.hooks import image_size_from_model_hook as size_hook
from ssn_plugin.registry import HOOKS


class Encoder(torch.nn.Module):
    """test_step gives gallery image i the feature [i, i, i] in float16, and records the mode
    and the grad state it ran in."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def test_step(self, batch):
        self.seen.append((self.training, torch.is_grad_enabled()))
        return [SimpleNamespace(gallery_index=i,
                                gallery_feat=torch.full((3, ), float(i), dtype=torch.float16))
                for i in batch]


def encoder_runner(batches):
    built = []

    def build_dataloader(cfg, seed):
        built.append((cfg, seed))
        return batches

    return SimpleNamespace(build_dataloader=build_dataloader, model=Encoder(), seed=5), built


@pytest.mark.parametrize('training', [True, False])
def test_encode_gallery_puts_features_in_gallery_order_in_eval_mode(training):
    gallery = ['a', 'b', 'c']
    runner, built = encoder_runner([[2, 0], [1]])
    runner.model.train(training)
    feats = gallery_hook.encode_gallery(runner, gallery, batch_size=2, num_workers=1)
    assert feats.dtype == torch.float32 and feats.shape == (3, 3)
    assert feats.tolist() == [[0.0] * 3, [1.0] * 3, [2.0] * 3]
    assert built == [(dict(dataset=gallery, batch_size=2, num_workers=1,
                           sampler=dict(type='DefaultSampler', shuffle=False),
                           collate_fn=dict(type='pseudo_collate')), 5)]
    assert runner.model.seen == [(False, False), (False, False)]  # eval, no grad
    assert runner.model.training is training  # the mode is given back


def test_encode_gallery_refuses_to_miss_an_image():
    runner, _ = encoder_runner([[0], [2]])
    with pytest.raises(RuntimeError, match='gallery encoding missed 1 of 3 images; the sampler '
                                           'must cover the whole gallery'):
        gallery_hook.encode_gallery(runner, ['a', 'b', 'c'], batch_size=1)
    runner, built = encoder_runner([[0]])
    assert gallery_hook.encode_gallery(runner, ['a'], 1).shape == (1, 3)
    assert built[0][0]['num_workers'] == 0  # by default in the main process


class Metric:
    def __init__(self):
        self.galleries = []

    def set_gallery(self, feats, names, paths):
        self.galleries.append((feats, names, paths))


class Dataset:
    gallery_names = ['g0', 'g1']
    gallery = [{'img_path': '/d/g0.png'}, {'img_path': '/d/g1.png'}]

    def gallery_dataset(self):
        return ['image 0', 'image 1']


def eval_loop(dataset, metrics, batch_size=4, num_workers=2):
    return SimpleNamespace(evaluator=SimpleNamespace(metrics=metrics), dataloader=SimpleNamespace(
        dataset=dataset, batch_size=batch_size, num_workers=num_workers))


@pytest.fixture
def encoded(monkeypatch):
    """Replaces encode_gallery; records what it was given and returns ``result['feats']``."""
    calls, result = [], {'feats': torch.ones(2, 3)}
    logged = []

    def encode(runner, gallery, batch_size, num_workers=0):
        calls.append((gallery, batch_size, num_workers))
        return result['feats']

    monkeypatch.setattr(gallery_hook, 'encode_gallery', encode)
    monkeypatch.setattr(gallery_hook, 'print_log', lambda msg, **kw: logged.append((msg, kw)))
    return SimpleNamespace(calls=calls, result=result, logged=logged)


def test_the_gallery_goes_to_every_metric_that_takes_one(encoded):
    with_gallery, other = Metric(), SimpleNamespace()
    loop = eval_loop(Dataset(), [with_gallery, other])
    hook = HOOKS.build(dict(type='GalleryFeatureHook'))
    assert (hook.batch_size, hook.num_workers) == (None, None)  # the loader's, by default
    hook.before_val_epoch(SimpleNamespace(val_loop=loop))
    assert encoded.calls == [(['image 0', 'image 1'], 4, 2)]
    [(feats, names, paths)] = with_gallery.galleries
    assert feats is encoded.result['feats']
    assert names == ['g0', 'g1'] and paths == ['/d/g0.png', '/d/g1.png']
    [(message, kwargs)] = encoded.logged
    assert message.startswith('Encoded the gallery: 2 images in ') and message.endswith(' s')
    assert kwargs == dict(logger='current')


def test_own_batch_size_and_workers_win_and_zero_workers_means_zero(encoded):
    runner = SimpleNamespace(test_loop=eval_loop(Dataset(), [Metric()]))
    gallery_hook.GalleryFeatureHook(batch_size=8, num_workers=0).before_test_epoch(runner)
    gallery_hook.GalleryFeatureHook(num_workers=3).before_test_epoch(runner)
    assert [call[1:] for call in encoded.calls] == [(8, 0), (4, 3)]


def test_ranks_other_than_the_first_get_no_features_names_or_paths(encoded):
    encoded.result['feats'] = None  # encode_gallery's answer on rank > 0
    metric = Metric()
    gallery_hook.GalleryFeatureHook().before_test_epoch(
        SimpleNamespace(test_loop=eval_loop(Dataset(), [metric])))
    assert metric.galleries == [(None, None, None)]


def test_validation_and_test_prepare_their_own_loop(encoded):
    val, test = Metric(), Metric()
    runner = SimpleNamespace(val_loop=eval_loop(Dataset(), [val]),
                             test_loop=eval_loop(Dataset(), [test], batch_size=1))
    hook = gallery_hook.GalleryFeatureHook()
    hook.before_test_epoch(runner)
    assert (len(val.galleries), len(test.galleries)) == (0, 1)
    hook.before_val_epoch(runner)
    assert (len(val.galleries), len(test.galleries)) == (1, 1)
    assert [call[1] for call in encoded.calls] == [1, 4]


def test_a_dataset_without_a_gallery_is_refused_only_when_a_metric_needs_one(encoded):
    hook = gallery_hook.GalleryFeatureHook()
    hook.before_val_epoch(SimpleNamespace(val_loop=eval_loop(object(), [SimpleNamespace()])))
    assert encoded.calls == []  # no gallery metric: nothing to encode, nothing to refuse
    with pytest.raises(TypeError, match='^object has no gallery_dataset\\(\\); '
                                        'GalleryFeatureHook needs a CIR dataset$'):
        hook.before_val_epoch(SimpleNamespace(val_loop=eval_loop(object(), [Metric()])))


class SizedDataset:
    image_cache = '/caches/val'

    def __init__(self, filled, cached):
        self.answer, self.calls = (filled, cached), []

    def prepare_for_model(self, size, build_caches):
        self.calls.append((size, build_caches))
        return self.answer


def size_runner(dataset, image_size=(336, 336)):
    loop = SimpleNamespace(dataloader=SimpleNamespace(dataset=dataset))
    model = SimpleNamespace(image_size=image_size) if image_size else SimpleNamespace()
    return SimpleNamespace(model=model, train_loop=loop, val_loop=loop, test_loop=loop)


@pytest.mark.parametrize('stage', ['train', 'val', 'test'])
def test_each_loop_gets_the_models_image_size_and_says_so(monkeypatch, stage):
    logged = []
    monkeypatch.setattr(size_hook, 'print_log', lambda msg, **kw: logged.append((msg, kw)))
    dataset = SizedDataset(filled=True, cached=True)
    hook = HOOKS.build(dict(type='ImageSizeFromModelHook'))
    getattr(hook, f'before_{stage}')(size_runner(dataset))
    assert dataset.calls == [((336, 336), True)]  # builds missing caches by default
    assert logged == [
        (f'{stage} pipelines: image size (336, 336) taken from the model',
         dict(logger='current')),
        (f'{stage} pipelines read preprocessed images from /caches/val', dict(logger='current'))]


def test_nothing_filled_nothing_said_and_build_caches_passed_on(monkeypatch):
    logged = []
    monkeypatch.setattr(size_hook, 'print_log', lambda msg, **kw: logged.append(msg))
    dataset = SizedDataset(filled=False, cached=False)
    size_hook.ImageSizeFromModelHook(build_caches=False).before_val(size_runner(dataset))
    assert dataset.calls == [((336, 336), False)] and logged == []
    dataset = SizedDataset(filled=False, cached=True)
    size_hook.ImageSizeFromModelHook().before_val(size_runner(dataset))
    assert logged == ['val pipelines read preprocessed images from /caches/val']


def test_a_model_without_a_size_or_a_dataset_without_resize_steps_is_left_alone():
    dataset = SizedDataset(filled=True, cached=True)
    size_hook.ImageSizeFromModelHook().before_train(size_runner(dataset, image_size=None))
    assert dataset.calls == []
    # Not a CIR dataset: nothing to prepare (a plain list has no prepare_for_model).
    size_hook.ImageSizeFromModelHook().before_train(size_runner(['x']))
    assert size_hook.ImageSizeFromModelHook.priority == 'ABOVE_NORMAL'  # before the gallery


class SavingRunner:
    """What SafeCheckpointHook's save step uses of a Runner; records each save."""

    def __init__(self, work_dir):
        self.work_dir, self.saved, self.info = str(work_dir), [], {}
        self.message_hub = SimpleNamespace(update_info=self.info.__setitem__)

    def save_checkpoint(self, out_dir, filename, file_client_args=None, **kwargs):
        with open(osp.join(out_dir, filename), 'wb') as f:
            f.write(filename.encode())
        self.saved.append((filename, kwargs))


def test_a_checkpoint_save_passes_every_argument_on_and_prunes_after_writing(tmp_path):
    hook = HOOKS.build(dict(type='SafeCheckpointHook', interval=1, max_keep_ckpts=1,
                            save_optimizer=False, extra_flag=3))  # extra: to save_checkpoint
    hook.out_dir = str(tmp_path)
    hook.keep_ckpt_ids = deque(maxlen=1)  # as before_train sets it up
    runner = SavingRunner(tmp_path)
    hook._save_checkpoint_with_step(runner, 1, meta={'epoch': 1})
    [(written, kwargs)] = runner.saved
    assert written == '.epoch_1.pth.tmp'  # a temporary file, renamed once written
    assert kwargs == dict(save_optimizer=False, save_param_scheduler=True, meta={'epoch': 1},
                          by_epoch=True, backend_args=None, extra_flag=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['epoch_1.pth', 'last_checkpoint']
    assert (tmp_path / 'last_checkpoint').read_text() == 'epoch_1.pth'  # by name
    assert runner.info == {'keep_ckpt_ids': [1], 'last_ckpt': str(tmp_path / 'epoch_1.pth')}
    assert 'save_checkpoint' not in vars(runner)  # the Runner's own method again
    hook._save_checkpoint_with_step(runner, 2, meta={'epoch': 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ['epoch_2.pth', 'last_checkpoint']
    assert runner.info['keep_ckpt_ids'] == [2]


class BestRunner(SavingRunner):
    """SavingRunner with what the best-checkpoint step reads: the epoch, a message hub with
    runtime_info, a logger."""

    def __init__(self, work_dir):
        super().__init__(work_dir)
        self.epoch, self.iter = 0, 0
        self.message_hub = SimpleNamespace(
            runtime_info=self.info, update_info=self.info.__setitem__, get_info=self.info.get)
        self.logger = SimpleNamespace(info=lambda message: None)
        self.present = []  # the files in the folder at each save

    def save_checkpoint(self, out_dir, filename, file_client_args=None, **kwargs):
        self.present.append(sorted(os.listdir(out_dir)))
        super().save_checkpoint(out_dir, filename, file_client_args, **kwargs)


def best_hook(tmp_path, save_best):
    from mmengine.fileio import get_file_backend
    hook = HOOKS.build(dict(type='SafeCheckpointHook', interval=1, save_best=save_best,
                            rule='greater'))
    hook.out_dir, hook.file_backend = str(tmp_path), get_file_backend(str(tmp_path))
    if isinstance(save_best, list):  # as before_train sets them up
        hook.best_ckpt_path_dict = {key: None for key in save_best}
    else:
        hook.best_ckpt_path = None
    return hook


def best_files(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir())


def test_the_best_checkpoint_is_kept_until_a_better_one_is_written(tmp_path):
    """Better at epoch 1, worse at 2, better at 3: epoch 1's file stays through epoch 2 and is
    removed only once epoch 3's is in place."""
    hook, runner = best_hook(tmp_path, 'acc'), BestRunner(tmp_path)
    for epoch, acc, files in ((1, 0.5, ['best_acc_epoch_1.pth']),
                              (2, 0.4, ['best_acc_epoch_1.pth']),
                              (3, 0.7, ['best_acc_epoch_3.pth'])):
        runner.epoch = epoch
        hook._save_best_checkpoint(runner, {'acc': acc})
        assert best_files(tmp_path) == files, epoch
        assert hook.best_ckpt_path == str(tmp_path / files[0])
        assert runner.info['best_ckpt'] == str(tmp_path / files[0])
    # Each was written as a temporary file first and renamed; the old one was still there.
    assert [name for name, _ in runner.saved] == ['.best_acc_epoch_1.pth.tmp',
                                                  '.best_acc_epoch_3.pth.tmp']
    assert runner.present == [[], ['best_acc_epoch_1.pth']]


def test_without_save_best_no_best_checkpoint_is_written(tmp_path):
    hook, runner = HOOKS.build(dict(type='SafeCheckpointHook', interval=1)), BestRunner(tmp_path)
    hook._save_best_checkpoint(runner, {'acc': 0.5})  # after each validation
    assert runner.saved == [] and best_files(tmp_path) == []


def test_with_two_best_keys_each_keeps_its_own_file(tmp_path):
    hook, runner = best_hook(tmp_path, ['acc', 'r1']), BestRunner(tmp_path)
    for epoch, metrics, best in (
            (1, {'acc': 0.5, 'r1': 0.5}, {'acc': 1, 'r1': 1}),
            (2, {'acc': 0.6, 'r1': 0.4}, {'acc': 2, 'r1': 1}),  # only acc improves
            (3, {'acc': 0.55, 'r1': 0.7}, {'acc': 2, 'r1': 3})):  # only r1 improves
        runner.epoch = epoch
        hook._save_best_checkpoint(runner, metrics)
        paths = {key: str(tmp_path / f'best_{key}_epoch_{e}.pth') for key, e in best.items()}
        assert hook.best_ckpt_path_dict == paths, epoch
        assert best_files(tmp_path) == sorted(osp.basename(p) for p in paths.values()), epoch
    # Each key's old best stays until its new one is in place.
    assert runner.present == [[], ['best_acc_epoch_1.pth'],  # epoch 1: acc, then r1
                              ['best_acc_epoch_1.pth', 'best_r1_epoch_1.pth'],  # 2: acc
                              ['best_acc_epoch_2.pth', 'best_r1_epoch_1.pth']]  # 3: r1
