"""SafeCheckpointLoaderHook's parts, one by one and without training: which checkpoint a resume
takes, which paths of a resumed message hub survive, how changed optimizer settings are
named, and what the hook does before a run, after a load and before a save.
The same behaviour through a real Runner is in ``test_hostile_resume.py`` (slow)."""
import os.path as osp
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import BaseLoop

from ssn_plugin.engine import NothingToResume
from ssn_plugin.engine.hooks import safe_checkpoint_loader_hook as loader
from ssn_plugin.engine.utils import unwrap_model
from ssn_plugin.registry import HOOKS


def touch(path) -> str:
    open(path, 'wb').close()
    return str(path)


def resumable(work_dir) -> str:
    """A work dir with ``epoch_1.pth``, named by its ``last_checkpoint``; returns that path."""
    path = touch(work_dir / 'epoch_1.pth')
    (work_dir / 'last_checkpoint').write_text('epoch_1.pth')
    return path


# -- which checkpoint a resume takes ------------------------------------------------------

def test_latest_checkpoint_is_taken_by_file_name_inside_the_work_dir(tmp_path):
    work = tmp_path / 'work'
    work.mkdir()
    assert loader.latest_checkpoint(str(work)) is None  # no record: nothing to resume
    touch(work / 'epoch_3.pth')
    # An absolute path elsewhere (a copied work dir) and surrounding white space.
    (work / 'last_checkpoint').write_text('  /elsewhere/original/epoch_3.pth\n')
    assert loader.latest_checkpoint(str(work)) == osp.join(str(work), 'epoch_3.pth')


@pytest.mark.parametrize('record, named', [('', "'nothing'"), ('\n', "'nothing'"),
                                           ('/a/epoch_9.pth', "'epoch_9.pth'")])
def test_a_record_that_names_no_file_is_refused_with_the_record_and_the_work_dir(
        tmp_path, record, named):
    (tmp_path / 'last_checkpoint').write_text(record)
    with pytest.raises(NothingToResume) as error:
        loader.latest_checkpoint(str(tmp_path))
    assert str(error.value) == (
        f'{tmp_path / "last_checkpoint"} names {named}, which is not a file in the work dir '
        f'{tmp_path}; pass --resume CKPT to name the checkpoint')
    assert isinstance(error.value, FileNotFoundError)  # what callers of mmengine catch


def test_a_folder_of_that_name_is_not_a_checkpoint(tmp_path):
    (tmp_path / 'epoch_1.pth').mkdir()
    (tmp_path / 'last_checkpoint').write_text('epoch_1.pth')
    with pytest.raises(NothingToResume, match="names 'epoch_1.pth'"):
        loader.latest_checkpoint(str(tmp_path))
    (tmp_path / 'last_checkpoint').unlink()
    (tmp_path / 'last_checkpoint').mkdir()  # a folder as the record: no record at all
    assert loader.latest_checkpoint(str(tmp_path)) is None


# -- the paths of a resumed message hub ---------------------------------------------------

def test_checkpoint_paths_are_moved_into_the_work_dir_or_dropped(tmp_path):
    work = str(tmp_path)
    best = touch(tmp_path / 'best_R1_epoch_2.pth')
    touch(tmp_path / 'epoch_2.pth')
    info = {
        'best_ckpt': '/victim/best_R1_epoch_2.pth',      # by name, into the work dir
        'last_ckpt': '/victim/epoch_2.pth',
        'best_ckpt_R5': '/victim/gone.pth',              # names no file here: dropped
        'best_ckpt_R10': 7,                              # not a path at all: dropped
        'best_score': 0.5,                               # not a path key: untouched
        'keep_ckpt_ids': [1, 2],                         # integers: kept
        'iter': 12,
    }
    dropped = loader.confine_paths(info, work)
    assert dropped == ['best_ckpt_R5', 'best_ckpt_R10']  # in the record's order
    assert info == {'best_ckpt': best, 'last_ckpt': osp.join(work, 'epoch_2.pth'),
                    'best_score': 0.5, 'keep_ckpt_ids': [1, 2], 'iter': 12}


@pytest.mark.parametrize('path', ['', '/victim/', '/'])
def test_a_path_without_a_file_name_is_dropped_even_when_the_work_dir_exists(tmp_path, path):
    info = {'best_ckpt': path}
    assert loader.confine_paths(info, str(tmp_path)) == ['best_ckpt'] and info == {}


@pytest.mark.parametrize('ids', [[1, '../x'], [True, 2], (1, 2), '12', None, [1.0]])
def test_keep_ckpt_ids_that_are_not_a_list_of_integers_are_dropped(tmp_path, ids):
    # The CheckpointHook deletes the files these ids name: only a list of ints is trusted.
    info = {'keep_ckpt_ids': ids, 'epoch': 1}
    assert loader.confine_paths(info, str(tmp_path)) == ['keep_ckpt_ids']
    assert info == {'epoch': 1}
    info = {'keep_ckpt_ids': []}
    assert loader.confine_paths(info, str(tmp_path)) == [] and info == {'keep_ckpt_ids': []}


# -- optimizer settings -------------------------------------------------------------------

def test_optimizer_changes_name_each_key_by_its_full_path_in_sorted_order():
    saved = {'type': 'OptimWrapper', 'clip_grad': None,
             'optimizer': {'type': 'Adam', 'lr': 1e-4, 'betas': [0.9, 0.999]},
             'paramwise_cfg': {'custom_keys': {'clip': {'lr_mult': 0.1}}}}
    current = {'type': 'OptimWrapper', 'accumulative_counts': 2,
               'optimizer': {'type': 'AdamW', 'lr': 1e-4, 'betas': [0.9, 0.98]},
               'paramwise_cfg': {'custom_keys': {'clip': {'lr_mult': 0.2}}}}
    assert loader.optimizer_changes(saved, current) == [
        "optim_wrapper.accumulative_counts: '<unset>' in the checkpoint, 2 now",
        "optim_wrapper.clip_grad: None in the checkpoint, '<unset>' now",
        'optim_wrapper.optimizer.betas: [0.9, 0.999] in the checkpoint, [0.9, 0.98] now',
        "optim_wrapper.optimizer.type: 'Adam' in the checkpoint, 'AdamW' now",
        'optim_wrapper.paramwise_cfg.custom_keys.clip.lr_mult: 0.1 in the checkpoint, 0.2 now',
    ]
    assert loader.optimizer_changes(saved, saved) == []
    # A tuple in the config file and a list from --cfg-options are one setting; other items
    # or nesting are not.
    assert loader.optimizer_changes({'betas': (0.9, 0.98)}, {'betas': [0.9, 0.98]}) == []
    assert loader.optimizer_changes({'b': [(1, 2)]}, {'b': ([1, 2], )}) == []
    assert loader.optimizer_changes({'b': (1, 2)}, {'b': [1, 3]}, 'o') == [
        'o.b: (1, 2) in the checkpoint, [1, 3] now']
    assert loader.optimizer_changes({'b': (1, 2)}, {'b': [[1, 2]]}, 'o') != []
    # A dict against a value is one change, not a walk into the dict.
    assert loader.optimizer_changes({'optimizer': {'lr': 1}}, {'optimizer': 3}, 'o') == [
        "o.optimizer: {'lr': 1} in the checkpoint, 3 now"]
    # Keys of mixed types sort by their text instead of failing.
    assert loader.optimizer_changes({1: 'a', 'b': 2}, {}, 'p') == [
        "p.1: 'a' in the checkpoint, '<unset>' now", "p.b: 2 in the checkpoint, '<unset>' now"]


def test_the_saved_optimizer_settings_are_plain_data_as_a_checkpoint_holds_them():
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper', optimizer=dict(
        type='AdamW', lr=1e-4, betas=(0.9, 0.98)))))
    plain = loader.plain_optim_cfg(cfg)
    assert plain == {'type': 'OptimWrapper',
                     'optimizer': {'type': 'AdamW', 'lr': 1e-4, 'betas': (0.9, 0.98)}}
    assert type(plain) is dict and type(plain['optimizer']) is dict
    assert loader.plain_optim_cfg(Config(dict(model=dict(type='SSN')))) == {}  # a test config


# -- the hook in a run --------------------------------------------------------------------

class Loop(BaseLoop):
    def run(self):  # pragma: no cover - never run
        pass


def fake_runner(work_dir, resume=False, load_from=None, training=True, model=None, cfg=None,
                param_schedulers=None):
    return SimpleNamespace(
        _resume=resume, _load_from=load_from, work_dir=str(work_dir), model=model,
        param_schedulers=param_schedulers,
        _train_loop=object.__new__(Loop) if training else dict(type='EpochBasedTrainLoop'),
        cfg=cfg if cfg is not None else Config(dict(optim_wrapper=dict(
            optimizer=dict(type='SGD', lr=0.1)))))


def test_the_hook_defaults_to_strict_and_to_no_new_modules():
    hook = HOOKS.build(dict(type='SafeCheckpointLoaderHook'))
    assert hook.strict is True and hook.new_modules == ()
    assert (hook.resuming, hook.training) == (False, False)
    hook = HOOKS.build(dict(type='SafeCheckpointLoaderHook', strict=False,
                            new_modules=['combiner.']))
    assert hook.strict is False and hook.new_modules == ('combiner.', )
    assert hook.priority == 'VERY_HIGH'  # before mmengine loads or resumes anything


def test_before_run_points_a_resume_at_the_work_dirs_own_checkpoint(tmp_path):
    hook = loader.SafeCheckpointLoaderHook()
    ckpt = touch(tmp_path / 'epoch_1.pth')
    (tmp_path / 'last_checkpoint').write_text('/original/epoch_1.pth')

    runner = fake_runner(tmp_path, resume=True)
    hook.before_run(runner)
    assert runner._load_from == ckpt and hook.resuming and hook.training

    runner = fake_runner(tmp_path, resume=True, load_from='/chosen.pth', training=False)
    hook.before_run(runner)  # --resume CKPT: the named file, as the user asked
    assert runner._load_from == '/chosen.pth' and hook.resuming and not hook.training

    runner = fake_runner(tmp_path, resume=False)
    hook.before_run(runner)  # no resume: the record is not read
    assert runner._load_from is None and not hook.resuming


def test_before_run_with_nothing_to_resume_stops_or_starts_fresh(tmp_path):
    hook = loader.SafeCheckpointLoaderHook()
    with pytest.raises(NothingToResume) as error:
        hook.before_run(fake_runner(tmp_path, resume=True))
    assert str(error.value).startswith(
        f'--resume: the work dir {tmp_path} has no last_checkpoint, so there is nothing to '
        'resume. Pass --resume CKPT, --resume-or-start')

    runner = fake_runner(tmp_path, resume=loader.RESUME_OR_START)
    hook.before_run(runner)
    assert runner._resume is False and hook.resuming is False and runner._load_from is None


def test_after_load_checks_the_fit_with_the_new_modules_only_when_training_from_weights(
        tmp_path):
    model = torch.nn.ModuleDict(dict(body=torch.nn.Linear(2, 2), combiner=torch.nn.Linear(2, 1)))
    body_only = {f'body.{k}': v for k, v in model['body'].state_dict().items()}
    hook = loader.SafeCheckpointLoaderHook(new_modules=['combiner.'])

    def load(checkpoint, **kw):
        runner = fake_runner(tmp_path, model=torch.nn.DataParallel(model), **kw)
        hook.before_run(runner)
        hook.after_load_checkpoint(runner, checkpoint)

    load({'state_dict': body_only})  # load_from in training: the combiner may be new
    with pytest.raises(ValueError, match=r'2 tensors missing \(first: combiner.weight\)'):
        load({'state_dict': body_only}, training=False)  # a test run needs every tensor
    with pytest.raises(ValueError, match='tensors missing'):
        load(body_only, training=False)  # a bare state dict is checked too
    resumable(tmp_path)
    with pytest.raises(ValueError, match='tensors missing'):
        load({'state_dict': body_only}, resume=True)  # a resume needs every tensor
    loose = loader.SafeCheckpointLoaderHook(strict=False)
    runner = fake_runner(tmp_path, model=model, training=False)
    loose.before_run(runner)
    loose.after_load_checkpoint(runner, {'state_dict': {}})  # strict=False: mmengine warns


def test_after_load_on_resume_confines_paths_and_refuses_other_optimizer_settings(
        tmp_path, monkeypatch):
    model = torch.nn.Linear(2, 2)
    resumable(tmp_path)
    logged = []
    monkeypatch.setattr(loader, 'print_log', lambda msg, **kw: logged.append((msg, kw)))
    hook = loader.SafeCheckpointLoaderHook()
    runner = fake_runner(tmp_path, resume=True, model=model)
    hook.before_run(runner)
    saved = loader.plain_optim_cfg(runner.cfg)
    info = {'best_ckpt': '/victim/best.pth', 'last_ckpt': '/victim/epoch_1.pth'}
    checkpoint = {'state_dict': model.state_dict(), 'optimizer': {},
                  'meta': {'epoch': 1, 'iter': 3, loader.OPTIM_KEY: saved},
                  'message_hub': {'runtime_info': info}}
    hook.after_load_checkpoint(runner, checkpoint)
    assert info == {'last_ckpt': osp.join(str(tmp_path), 'epoch_1.pth')}
    assert logged == [(f"Resuming: ['best_ckpt'] of the checkpoint name no file in the work dir "
                       f'{tmp_path}; they are not used', dict(logger='current', level=30))]

    logged.clear()
    checkpoint['meta'] = {'epoch': 1, 'iter': 3}  # without the record: used, with a warning
    hook.after_load_checkpoint(runner, checkpoint)
    assert len(logged) == 1 and logged[0][1] == dict(logger='current', level=30)
    assert logged[0][0].startswith('Resuming from a checkpoint that does not record its '
                                   'optimizer settings')

    logged.clear()
    checkpoint['meta'] = {'epoch': 1, 'iter': 3,
                          loader.OPTIM_KEY: dict(saved, optimizer=dict(type='SGD', lr=0.01))}
    with pytest.raises(ValueError) as error:
        hook.after_load_checkpoint(runner, checkpoint)
    assert str(error.value).startswith(
        'Resuming with other optimizer settings than the checkpoint was trained with: '
        'optim_wrapper.optimizer.lr: 0.01 in the checkpoint, 0.1 now. On resume')
    assert logged == []  # nothing to confine the second time round


def full_checkpoint(model):
    """What Runner.save_checkpoint writes (with the optimizer and the schedulers)."""
    return {'state_dict': model.state_dict(), 'optimizer': {}, 'param_schedulers': [],
            'meta': {'epoch': 1, 'iter': 3}, 'message_hub': {'runtime_info': {}}}


@pytest.mark.parametrize('drop, named', [
    ('optimizer', 'optimizer'), ('param_schedulers', 'param_schedulers'), ('meta', 'meta'),
    ('message_hub', 'message_hub'), ('meta.epoch', 'meta.epoch'), ('meta.iter', 'meta.iter'),
    ('message_hub.runtime_info', 'message_hub.runtime_info'),
    ('optimizer meta', 'meta, optimizer')])
def test_a_resume_from_a_checkpoint_without_optimizer_or_schedule_state_is_refused(
        tmp_path, drop, named):
    """mmengine would resume from it with the optimizer or the schedule silently started
    afresh, or fail with a bare KeyError."""
    model = torch.nn.Linear(2, 2)
    ckpt = resumable(tmp_path)
    hook = loader.SafeCheckpointLoaderHook()
    runner = fake_runner(tmp_path, resume=True, model=model, param_schedulers=['a schedule'])
    hook.before_run(runner)
    hook.after_load_checkpoint(runner, full_checkpoint(model))  # complete: resumed
    checkpoint = full_checkpoint(model)
    for key in drop.split():
        outer, _, inner = key.partition('.')
        del (checkpoint[outer] if inner else checkpoint)[inner or outer]
    with pytest.raises(ValueError) as error:
        hook.after_load_checkpoint(runner, checkpoint)
    assert str(error.value).startswith(
        f'Cannot resume from {ckpt}: the checkpoint has no {named} (a weights-only file, or one '
        'saved with save_optimizer=False or save_param_scheduler=False)')
    assert str(error.value).endswith('start a new run from these weights with load_from=CKPT.')


def test_a_run_without_schedulers_resumes_from_a_checkpoint_without_them(tmp_path):
    model = torch.nn.Linear(2, 2)
    resumable(tmp_path)
    hook = loader.SafeCheckpointLoaderHook()
    runner = fake_runner(tmp_path, resume=True, model=model, param_schedulers=None)
    hook.before_run(runner)
    checkpoint = full_checkpoint(model)
    del checkpoint['param_schedulers']  # mmengine saves none when the run has none
    hook.after_load_checkpoint(runner, checkpoint)
    # Loading weights (load_from, not a resume) needs nothing but the weights.
    runner = fake_runner(tmp_path, load_from=str(tmp_path / 'epoch_1.pth'), model=model)
    hook.before_run(runner)
    hook.after_load_checkpoint(runner, {'state_dict': model.state_dict()})


def test_a_load_that_is_not_a_resume_leaves_the_message_hub_alone(tmp_path):
    model = torch.nn.Linear(2, 2)
    hook = loader.SafeCheckpointLoaderHook()
    runner = fake_runner(tmp_path, load_from='/w.pth', model=model)
    hook.before_run(runner)
    info = {'best_ckpt': '/victim/best.pth'}
    other = {loader.OPTIM_KEY: {'optimizer': {'lr': 5}}}
    hook.after_load_checkpoint(runner, {'state_dict': model.state_dict(), 'meta': other,
                                        'message_hub': {'runtime_info': info}})
    assert info == {'best_ckpt': '/victim/best.pth'}  # mmengine does not resume it either


def test_each_saved_checkpoint_records_the_runs_optimizer_settings(tmp_path):
    hook = loader.SafeCheckpointLoaderHook()
    runner = fake_runner(tmp_path)
    checkpoint = {}
    hook.before_save_checkpoint(runner, checkpoint)
    assert checkpoint == {'meta': {loader.OPTIM_KEY: {'optimizer': {'type': 'SGD', 'lr': 0.1}}}}
    checkpoint = {'meta': {'epoch': 3}}
    hook.before_save_checkpoint(runner, checkpoint)
    assert checkpoint['meta'] == {'epoch': 3,
                                  loader.OPTIM_KEY: {'optimizer': {'type': 'SGD', 'lr': 0.1}}}


def test_unwrap_model_takes_the_module_out_of_a_wrapper():
    model = torch.nn.Linear(2, 2)
    assert unwrap_model(model) is model
    assert unwrap_model(torch.nn.DataParallel(model)) is model
