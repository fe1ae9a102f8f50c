"""Resume trusts nothing it does not need, and a crash while saving loses nothing.

Each attack is the one of issue 24, against a real checkpoint of the tiny CIRR recipe: a
marker file shows code execution, a victim directory shows deletion outside the work dir.
"""
import collections
import copy
import errno
import json
import os
import os.path as osp
import re
import shutil

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.config import Config
from mmengine.runner import Runner

from helpers import TINY_CLIP, make_tiny_cirr, write_tiny_config
from ssn_plugin.engine import (NothingToResume, SafeCheckpointHook, UnsafeFileError,
                               load_local_checkpoint, plain_data)
from ssn_plugin.engine.checkpoint import _safe_globals, safe_load

RUNS = iter(range(10**6))


class Call:
    """Pickles as ``fn(*args)``."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


class DeepcopyGadget:
    """Unpickles (allowed globals only: OrderedDict, getattr) as an OrderedDict whose instance
    ``__reduce_ex__`` is ``{4: (eval, (code, ))}.get``: ``copy.deepcopy`` then runs ``code``."""

    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        builtins = Call(getattr, getattr, '__self__')
        table = {4: (Call(getattr, builtins, 'eval'), (self.code, ))}
        return collections.OrderedDict, (), {'__reduce_ex__': Call(getattr, table, 'get')}


def runner_for(config: str, work_dir: str, max_epochs: int = 1, **cfg_options) -> Runner:
    cfg = Config.fromfile(config)
    cfg.work_dir = work_dir
    cfg.train_cfg.max_epochs = max_epochs
    cfg.experiment_name = f'run{next(RUNS)}'  # one logger per runner
    cfg.merge_from_dict(cfg_options)
    return Runner.from_cfg(cfg)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """One epoch of the tiny CIRR recipe (max_keep_ckpts=1); its work dir is copied per test."""
    root = tmp_path_factory.mktemp('hostile')
    clip = root / 'tiny_clip.json'
    clip.write_text(json.dumps(TINY_CLIP))
    make_tiny_cirr(str(root / 'cirr'), num_images=12, num_train=8, num_val=6)
    config = write_tiny_config(root, str(root / 'cirr'), str(clip))
    work = str(root / 'work')
    runner_for(config, work, **{'default_hooks.checkpoint.max_keep_ckpts': 1}).train()
    return dict(config=config, work=work)


def copy_run(trained, tmp_path) -> str:
    work = str(tmp_path / 'work')
    shutil.copytree(trained['work'], work)
    return work


def edit_checkpoint(path: str, edit) -> None:
    checkpoint = torch.load(path, weights_only=False)  # our own file
    edit(checkpoint)
    torch.save(checkpoint, path)


def checkpoint_hook(runner) -> SafeCheckpointHook:
    return next(h for h in runner.hooks if isinstance(h, SafeCheckpointHook))


def resume(trained, work, max_epochs=2, **cfg_options):
    runner = runner_for(trained['config'], work, max_epochs, resume=True,
                        **{'default_hooks.checkpoint.max_keep_ckpts': 1, **cfg_options})
    runner.train()
    return runner


def test_the_deepcopy_gadget_is_real(tmp_path):
    """The weights-only loader alone returns it without running anything; deepcopy runs it."""
    marker = tmp_path / 'pwned'
    path = tmp_path / 'gadget.pth'
    torch.save(dict(meta=dict(x=DeepcopyGadget(f"open({str(marker)!r}, 'w')"))), path)
    loaded = safe_load(str(path), allowed=_safe_globals())
    assert not marker.exists()
    copy.deepcopy(loaded)
    assert marker.exists()


def test_the_checkpoint_loader_rebuilds_the_gadget_as_plain_data(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'gadget.pth'
    torch.save(dict(message_hub=dict(runtime_info=dict(
        x=DeepcopyGadget(f"open({str(marker)!r}, 'w')")))), path)
    loaded = load_local_checkpoint(str(path))
    gadget = loaded['message_hub']['runtime_info']['x']
    assert type(gadget) is collections.OrderedDict and not vars(gadget)  # no instance state
    copy.deepcopy(loaded)
    assert not marker.exists()


def test_history_buffers_are_rebuilt_from_their_numbers(tmp_path):
    """A message hub's HistoryBuffer loads as a new buffer with the same history, max length
    and statistics, and without any other instance state."""
    buffer = HistoryBuffer([1.0, 2.0, 6.0], [1, 1, 2], max_length=7)
    buffer.__dict__['__deepcopy__'] = 'planted'
    path = tmp_path / 'hub.pth'
    torch.save(dict(message_hub=dict(log_scalars=dict(loss=buffer))), path)
    loaded = load_local_checkpoint(str(path))['message_hub']['log_scalars']['loss']
    assert type(loaded) is HistoryBuffer and loaded is not buffer
    assert loaded.data[0].tolist() == [1.0, 2.0, 6.0] and loaded.data[1].tolist() == [1, 1, 2]
    assert loaded.max_length == 7 and loaded.mean() == pytest.approx(9.0 / 4)  # sum / counts
    assert '__deepcopy__' not in vars(loaded)


@pytest.mark.parametrize('field, value', [
    ('_log_history', 'not numbers'), ('_count_history', np.zeros(2)),  # lengths 3 and 2
    ('max_length', 7.5)])
def test_a_history_buffer_that_is_not_two_arrays_and_an_int_is_refused(tmp_path, field, value):
    buffer = HistoryBuffer([1.0, 2.0, 6.0], [1, 1, 2])
    setattr(buffer, field, value)
    path = tmp_path / 'hub.pth'
    torch.save(dict(message_hub=dict(log_scalars=dict(loss=buffer))), path)
    with pytest.raises(UnsafeFileError, match=r"\['loss'\]: a HistoryBuffer whose history is "
                                              'not two arrays of equal length and an int'):
        load_local_checkpoint(str(path))


def test_a_history_buffer_without_its_fields_loads_empty(tmp_path):
    buffer = HistoryBuffer([1.0], [1])
    for field in ('_log_history', '_count_history', 'max_length'):
        delattr(buffer, field)
    path = tmp_path / 'hub.pth'
    torch.save(dict(loss=buffer), path)
    loaded = load_local_checkpoint(str(path))['loss']
    assert loaded.data[0].size == 0 and loaded.data[1].size == 0
    assert loaded.max_length == 1000000  # HistoryBuffer's own default


def test_what_a_history_buffer_holds_is_checked_by_path(tmp_path):
    buffer = HistoryBuffer([1.0], [1])
    buffer._log_history = [Call(getattr, getattr, '__self__')]  # a module, not a number
    path = tmp_path / 'hub.pth'
    torch.save(dict(loss=buffer), path)
    with pytest.raises(UnsafeFileError, match=r"\['loss'\]\._log_history\[0\]: a "
                                              'builtins.module'):
        load_local_checkpoint(str(path))
    buffer._log_history, buffer._count_history = np.ones(1), [Call(getattr, getattr, '__self__')]
    torch.save(dict(loss=buffer), path)
    with pytest.raises(UnsafeFileError, match=r"\._count_history\[0\]: a builtins.module"):
        load_local_checkpoint(str(path))


def test_objects_reached_through_getattr_are_refused_by_path(tmp_path):
    path = tmp_path / 'function.pth'
    torch.save(dict(meta=dict(hook=Call(getattr, getattr, '__self__'))), path)  # a module
    where = re.escape(str(path)) + r"\['meta'\]\['hook'\]"
    with pytest.raises(UnsafeFileError, match=f'^{where}: a builtins.module is not plain data'):
        load_local_checkpoint(str(path))


@pytest.mark.parametrize('content, where', [
    (dict(hooks=[1, Call(getattr, getattr, '__self__')]), r"\['hooks'\]\[1\]"),
    ({Call(getattr, getattr, '__self__'): 1}, r", key <module 'builtins'"),
])
def test_list_items_and_keys_are_named_too(tmp_path, content, where):
    path = tmp_path / 'nested.pth'
    torch.save(content, path)
    with pytest.raises(UnsafeFileError, match=f'^{re.escape(str(path))}{where}'):
        load_local_checkpoint(str(path))


def test_plain_data_called_alone_names_the_file_generically():
    with pytest.raises(UnsafeFileError, match=r'^the file\[0\]: a builtins.type'):
        plain_data([type])


@pytest.mark.slow
def test_resume_never_runs_the_gadget(trained, tmp_path):
    work = copy_run(trained, tmp_path)
    marker = tmp_path / 'pwned'
    edit_checkpoint(osp.join(work, 'epoch_1.pth'), lambda c: c['message_hub']['runtime_info']
                    .update(x=DeepcopyGadget(f"open({str(marker)!r}, 'w')")))
    resume(trained, work)  # MessageHub.load_state_dict deep-copies runtime_info
    assert not marker.exists()


@pytest.mark.slow
def test_resume_never_executes_the_config_text(trained, tmp_path):
    work = copy_run(trained, tmp_path)
    marker = tmp_path / 'pwned'
    edit_checkpoint(osp.join(work, 'epoch_1.pth'), lambda c: c['meta'].update(
        config=f"open({str(marker)!r}, 'w')\ngpu_ids = [0]"))
    runner = resume(trained, work)
    assert not marker.exists()
    assert runner.epoch == 2 and osp.isfile(osp.join(work, 'epoch_2.pth'))


@pytest.mark.slow
def test_a_best_checkpoint_path_outside_the_work_dir_is_never_deleted(trained, tmp_path):
    work = copy_run(trained, tmp_path)
    victim = tmp_path / 'victim'
    victim.mkdir()
    (victim / 'precious.txt').write_text('keep me')

    def attack(checkpoint):
        checkpoint['message_hub']['runtime_info'].update(best_ckpt=str(victim), best_score=-1.0)
    edit_checkpoint(osp.join(work, 'epoch_1.pth'), attack)
    resume(trained, work)
    assert (victim / 'precious.txt').read_text() == 'keep me'
    # The attacker's entry was dropped (so the run no longer knows its epoch-1 best, which
    # stays); the new best was written.
    assert osp.isfile(osp.join(work, 'best_cirr_Avg_epoch_2.pth'))


@pytest.mark.slow
def test_a_copied_work_dir_resumes_from_its_own_files_and_spares_the_original(trained,
                                                                               tmp_path):
    original = copy_run(trained, tmp_path / 'a')
    copied = str(tmp_path / 'b' / 'work')
    shutil.copytree(original, copied)
    best = [f for f in os.listdir(original) if f.startswith('best_')]
    assert best  # the original has a best checkpoint the copy's run must not delete
    os.remove(osp.join(original, 'epoch_1.pth'))  # the copy cannot be using it
    edit_checkpoint(osp.join(copied, 'epoch_1.pth'),
                    lambda c: c['message_hub']['runtime_info'].update(best_score=-1.0))
    resume(trained, copied)
    assert os.listdir(original) and all(osp.isfile(osp.join(original, f)) for f in best)
    assert osp.isfile(osp.join(copied, 'epoch_2.pth'))


@pytest.mark.slow
def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(trained, tmp_path, monkeypatch):
    """max_keep_ckpts=1 and ENOSPC halfway through epoch_2.pth: epoch_1.pth is still there,
    last_checkpoint names it, and the run resumes from it."""
    work = copy_run(trained, tmp_path)
    import mmengine.runner.runner as runner_module
    real_save = runner_module.save_checkpoint

    def full_disk(checkpoint, filename, *args, **kwargs):
        if 'epoch_2' in osp.basename(filename):
            with open(filename, 'wb') as f:
                f.write(b'half a checkpoint')
            raise OSError(errno.ENOSPC, 'No space left on device')
        return real_save(checkpoint, filename, *args, **kwargs)
    monkeypatch.setattr(runner_module, 'save_checkpoint', full_disk)
    with pytest.raises(OSError, match='No space left'):
        resume(trained, work)
    assert osp.isfile(osp.join(work, 'epoch_1.pth'))
    assert not osp.exists(osp.join(work, 'epoch_2.pth'))
    assert open(osp.join(work, 'last_checkpoint')).read() == 'epoch_1.pth'
    monkeypatch.setattr(runner_module, 'save_checkpoint', real_save)
    assert resume(trained, work).epoch == 2


@pytest.mark.slow
def test_checkpoints_are_pruned_only_after_the_new_one_is_written(trained, tmp_path):
    work = copy_run(trained, tmp_path)
    resume(trained, work, max_epochs=3)
    names = sorted(f for f in os.listdir(work) if f.endswith('.pth'))
    assert [n for n in names if n.startswith('epoch_')] == ['epoch_3.pth']
    assert not [n for n in os.listdir(work) if n.endswith('.tmp')]
    assert open(osp.join(work, 'last_checkpoint')).read() == 'epoch_3.pth'


def test_max_keep_ckpts_2_keeps_the_last_two_and_names_the_last(trained, tmp_path):
    """max_keep_ckpts=2 over epochs 1-3: epoch_1.pth goes once epoch_3.pth is written, the two
    newest stay; the hook and the message hub (saved into the checkpoint, read on resume)
    name the newest file, in the work dir."""
    work = copy_run(trained, tmp_path)
    runner = resume(trained, work, max_epochs=3,
                    **{'default_hooks.checkpoint.max_keep_ckpts': 2})
    assert sorted(f for f in os.listdir(work) if f.startswith('epoch_')) == [
        'epoch_2.pth', 'epoch_3.pth']
    newest = osp.join(work, 'epoch_3.pth')
    hook = checkpoint_hook(runner)
    assert hook.last_ckpt == newest and runner.message_hub.get_info('last_ckpt') == newest
    assert runner.message_hub.get_info('keep_ckpt_ids') == [2, 3]
    checkpoint = torch.load(newest, weights_only=False)
    saved = checkpoint['message_hub']['runtime_info']
    assert saved['last_ckpt'] == newest and saved['keep_ckpt_ids'] == [2, 3]
    # What a resume needs: the epoch done (by epoch: 3 after epoch 3), optimizer, schedulers.
    assert checkpoint['meta']['epoch'] == 3 and checkpoint['meta']['iter'] == runner.iter
    assert checkpoint['optimizer']['state'] and 'param_schedulers' in checkpoint


def test_max_keep_ckpts_0_keeps_every_checkpoint_as_mmengine_does(trained, tmp_path):
    work = copy_run(trained, tmp_path)
    resume(trained, work, max_epochs=2, **{'default_hooks.checkpoint.max_keep_ckpts': 0})
    assert sorted(f for f in os.listdir(work) if f.startswith('epoch_')) == [
        'epoch_1.pth', 'epoch_2.pth']


def test_save_optimizer_false_and_several_best_keys(trained, tmp_path):
    """save_optimizer / save_param_scheduler False leave them out of the checkpoint; with two
    save_best keys, each key keeps its own best file and the hook names it."""
    work = copy_run(trained, tmp_path)
    runner = resume(trained, work, **{
        'default_hooks.checkpoint.save_optimizer': False,
        'default_hooks.checkpoint.save_param_scheduler': False,
        'default_hooks.checkpoint.save_best': ['cirr/Avg', 'cirr/R@1']})
    checkpoint = torch.load(osp.join(work, 'epoch_2.pth'), weights_only=False)
    assert 'optimizer' not in checkpoint and 'param_schedulers' not in checkpoint
    hook = checkpoint_hook(runner)
    assert hook.best_ckpt_path_dict == {
        'cirr/Avg': osp.join(work, 'best_cirr_Avg_epoch_2.pth'),
        'cirr/R@1': osp.join(work, 'best_cirr_R@1_epoch_2.pth')}
    assert all(osp.isfile(path) for path in hook.best_ckpt_path_dict.values())


@pytest.mark.slow
def test_resume_with_nothing_to_resume_names_the_work_dir(trained, tmp_path):
    empty = str(tmp_path / 'empty')
    with pytest.raises(NothingToResume, match=f'the work dir {empty} has no last_checkpoint'):
        resume(trained, empty)
    assert not osp.exists(osp.join(empty, 'epoch_1.pth'))  # nothing was trained over


@pytest.mark.slow
def test_an_empty_last_checkpoint_is_named(trained, tmp_path):
    work = copy_run(trained, tmp_path)
    open(osp.join(work, 'last_checkpoint'), 'w').close()
    with pytest.raises(NothingToResume, match="last_checkpoint names 'nothing'"):
        resume(trained, work)


@pytest.mark.slow
def test_resume_or_start_starts_fresh_when_there_is_nothing(trained, tmp_path):
    work = str(tmp_path / 'fresh')
    runner = runner_for(trained['config'], work, 1, resume='or-start')
    runner.train()
    assert runner.epoch == 1 and osp.isfile(osp.join(work, 'epoch_1.pth'))


@pytest.mark.slow
@pytest.mark.parametrize('option, key', [
    ({'optim_wrapper.optimizer.lr': 1e-3}, 'optim_wrapper.optimizer.lr'),
    ({'optim_wrapper.optimizer.weight_decay': 0.5}, 'optim_wrapper.optimizer.weight_decay'),
    ({'optim_wrapper.optimizer.type': 'AdamW'}, 'optim_wrapper.optimizer.type'),
])
@pytest.mark.slow
def test_changed_optimizer_settings_on_resume_are_refused_by_name(trained, tmp_path, option,
                                                                  key):
    work = copy_run(trained, tmp_path)
    with pytest.raises(ValueError, match=f'{key}: .* in the checkpoint, .* now'):
        resume(trained, work, **option)
