"""Load every checkpoint of a run safely, only checkpoints that fit the model, and resume only
from the current work dir with the optimizer settings the checkpoint was trained with."""
import os.path as osp
from typing import Optional, Sequence

from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import BaseLoop

from ssn_plugin.registry import HOOKS
from ..checkpoint import check_checkpoint_fits, install_checkpoint_loader
from ..utils import unwrap_model

#: ``runtime_info`` keys of mmengine's CheckpointHook that hold a checkpoint path.
PATH_KEYS = ('best_ckpt', 'last_ckpt')
#: ``resume`` value (``tools/train.py --resume-or-start``): resume if the work dir has a
#: checkpoint, else start a fresh run.
RESUME_OR_START = 'or-start'
#: Where the optimizer settings of a run are recorded in its checkpoints.
OPTIM_KEY = 'ssn_optim_wrapper'


class NothingToResume(FileNotFoundError):
    """``--resume`` in a work dir that holds no checkpoint to resume from."""


def latest_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``work_dir/last_checkpoint`` names, inside ``work_dir`` (only its file
    name is used, so a copied work dir resumes from its own files); None when there is none.

    Raises:
        NothingToResume: when ``last_checkpoint`` is empty or names a missing file.
    """
    record = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(record):
        return None
    with open(record) as f:
        name = osp.basename(f.read().strip())
    path = osp.join(work_dir, name)
    if not name or not osp.isfile(path):
        raise NothingToResume(
            f'{record} names {name or "nothing"!r}, which is not a file in the work dir '
            f'{work_dir}; pass --resume CKPT to name the checkpoint')
    return path


def confine_paths(runtime_info: dict, work_dir: str) -> list:
    """Point the checkpoint paths of a loaded message hub into ``work_dir`` (by file name);
    drop those that name no file there, and ``keep_ckpt_ids`` that are not integers (the
    CheckpointHook deletes the files they name). Returns the dropped keys."""
    dropped = []
    for key in list(runtime_info):
        value = runtime_info[key]
        if key in PATH_KEYS or key.startswith('best_ckpt_'):
            path = osp.join(work_dir, osp.basename(value)) if isinstance(value, str) else ''
            if osp.basename(path) and osp.isfile(path):
                runtime_info[key] = path
            else:
                dropped.append(key)
                del runtime_info[key]
        elif key == 'keep_ckpt_ids' and not (
                isinstance(value, list) and all(type(v) is int for v in value)):
            dropped.append(key)
            del runtime_info[key]
    return dropped


def _as_lists(value):
    """``value`` with every tuple a list: ``betas=(0.9, 0.98)`` in a config file and
    ``betas=[0.9,0.98]`` on the command line are one setting."""
    if isinstance(value, (list, tuple)):
        return [_as_lists(v) for v in value]
    return value


def optimizer_changes(saved: dict, current: dict, prefix: str = 'optim_wrapper') -> list:
    """``key: saved -> current`` for every optimizer setting that differs (a tuple and a list
    of equal items do not differ)."""
    changes = []
    for key in sorted(set(saved) | set(current), key=str):
        old, new = saved.get(key, '<unset>'), current.get(key, '<unset>')
        if isinstance(old, dict) and isinstance(new, dict):
            changes += optimizer_changes(old, new, f'{prefix}.{key}')
        elif _as_lists(old) != _as_lists(new):
            changes.append(f'{prefix}.{key}: {old!r} in the checkpoint, {new!r} now')
    return changes


def plain_optim_cfg(cfg) -> dict:
    """The run's ``optim_wrapper`` config as plain data (dicts, not ConfigDicts), as a
    checkpoint records it."""
    return Config(dict(optim_wrapper=cfg.get('optim_wrapper', {}))).to_dict()['optim_wrapper']


@HOOKS.register_module()
class SafeCheckpointLoaderHook(Hook):
    """Load checkpoints through :func:`~ssn_plugin.engine.load_local_checkpoint`, only
    checkpoints that fit the model, and resume only what the work dir holds.

    ``before_run`` comes before the Runner loads (``load_from``) or resumes a checkpoint, in
    ``train()`` and ``test()`` alike, so every checkpoint a run reads is loaded with
    ``weights_only=True`` and rebuilt as plain data (``meta['config']``, which mmengine would
    execute, is dropped). Every loaded checkpoint is then checked against the model
    (:func:`~ssn_plugin.engine.checkpoint.check_checkpoint_fits`).

    Resuming (``resume=True`` without ``load_from``, ``tools/train.py --resume``): the
    checkpoint is the file ``work_dir/last_checkpoint`` names, taken by file name inside the
    work dir; with none, the run stops with :class:`NothingToResume` naming the work dir
    (``resume='or-start'``, ``--resume-or-start``, starts fresh instead). The checkpoint paths
    of the resumed message hub (best and last checkpoint) are likewise taken by file name
    inside the work dir, or dropped, so a resumed run never deletes a file elsewhere. The
    optimizer settings are recorded in each checkpoint; resuming with other settings (a
    changed ``lr``, ``weight_decay`` or optimizer type, which the optimizer state would
    silently override) is refused with the keys that differ. So is a checkpoint without the
    optimizer or scheduler state (saved with ``save_optimizer=False``, weights only), from
    which mmengine would resume with them silently started afresh.

    Args:
        strict (bool): Refuse a checkpoint with missing, unexpected or differently shaped
            tensors. False lets mmengine load the matching part (it warns). Defaults to True.
        new_modules (Sequence[str]): Prefixes of tensors that a *training* run's ``load_from``
            checkpoint may lack: the modules a later stage adds to an earlier stage's model
            (the Combiner's ``'combiner.'`` on a stage-1 CLIP). A test run or a resume still
            needs every tensor. Defaults to ().
    """

    priority = 'VERY_HIGH'

    def __init__(self, strict: bool = True, new_modules: Sequence[str] = ()):
        self.strict = strict
        self.new_modules = tuple(new_modules)
        self.resuming = False
        self.training = False

    def before_run(self, runner) -> None:
        install_checkpoint_loader()
        self.resuming = bool(runner._resume)
        # Runner.train() builds its train loop before this hook; test() leaves it a dict.
        self.training = isinstance(runner._train_loop, BaseLoop)
        if not self.resuming or runner._load_from is not None:
            return
        found = latest_checkpoint(runner.work_dir)
        if found is not None:
            runner._load_from = found
        elif runner._resume == RESUME_OR_START:
            print_log(f'Nothing to resume in {runner.work_dir}: starting a fresh run',
                      logger='current')
            runner._resume = self.resuming = False
        else:
            raise NothingToResume(
                f'--resume: the work dir {runner.work_dir} has no last_checkpoint, so there '
                'is nothing to resume. Pass --resume CKPT, --resume-or-start to start fresh '
                'when there is nothing, or leave --resume out (a fresh run writes its '
                'checkpoints into the work dir).')

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.strict:
            fresh = self.new_modules if self.training and not self.resuming else ()
            check_checkpoint_fits(unwrap_model(runner.model),
                                  checkpoint.get('state_dict', checkpoint), fresh)
        if not self.resuming:
            return
        self._check_resumable(runner, checkpoint)
        info = checkpoint['message_hub']['runtime_info']
        dropped = confine_paths(info, runner.work_dir)
        if dropped:
            print_log(f'Resuming: {dropped} of the checkpoint name no file in the work dir '
                      f'{runner.work_dir}; they are not used', logger='current',
                      level=30)
        self._check_optimizer(runner, checkpoint['meta'].get(OPTIM_KEY))

    @staticmethod
    def _check_resumable(runner, checkpoint: dict) -> None:
        """Refuse to resume from a checkpoint that lacks what continuing needs.

        mmengine fails on a missing ``meta`` or ``message_hub`` with a bare KeyError or
        assertion, and resumes *silently* without ``optimizer`` (the optimizer starts afresh)
        or ``param_schedulers`` (the learning-rate schedule starts from its first step): files
        saved with ``save_optimizer=False`` / ``save_param_scheduler=False`` or weights-only
        files. Neither continues the run as if it had never stopped.
        """
        missing = [key for key in ('meta', 'message_hub', 'optimizer') if key not in checkpoint]
        missing += [f'meta.{key}' for key in ('epoch', 'iter')
                    if 'meta' in checkpoint and key not in checkpoint['meta']]
        if 'message_hub' in checkpoint and 'runtime_info' not in checkpoint['message_hub']:
            missing.append('message_hub.runtime_info')
        if 'param_schedulers' not in checkpoint and runner.param_schedulers is not None:
            missing.append('param_schedulers')
        if missing:
            raise ValueError(
                f'Cannot resume from {runner._load_from}: the checkpoint has no '
                f'{", ".join(missing)} (a weights-only file, or one saved with '
                'save_optimizer=False or save_param_scheduler=False), so the run would not go on '
                'as if it had never stopped: the optimizer state or the learning-rate schedule '
                'would start afresh. Resume from a full checkpoint of the run, or start a new '
                'run from these weights with load_from=CKPT.')

    def _check_optimizer(self, runner, saved: Optional[dict]) -> None:
        if saved is None:
            print_log('Resuming from a checkpoint that does not record its optimizer settings: '
                      'the optimizer state of the checkpoint is used as it is, whatever the '
                      'config says', logger='current', level=30)
            return
        changes = optimizer_changes(saved, plain_optim_cfg(runner.cfg))
        if changes:
            raise ValueError(
                'Resuming with other optimizer settings than the checkpoint was trained with: '
                + '; '.join(changes) + '. On resume the optimizer state and its learning '
                'rates come from the checkpoint, so these would be silently ignored. Resume '
                'with the same settings, or start a new run from the weights with '
                'load_from=CKPT (a fresh optimizer).')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint.setdefault('meta', {})[OPTIM_KEY] = plain_optim_cfg(runner.cfg)
