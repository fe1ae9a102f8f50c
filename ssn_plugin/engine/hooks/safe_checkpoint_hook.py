"""mmengine's CheckpointHook, with writes that a crash or a full disk cannot turn into lost
runs."""
import contextlib
import os
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook

from ssn_plugin.registry import HOOKS


def replace_atomically(tmp: str, path: str) -> None:
    """Flush ``tmp`` to disk, then rename it to ``path`` (one step for a reader)."""
    with open(tmp, 'rb+') as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # the rename itself, where the OS allows it
        fd = os.open(osp.dirname(osp.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a flushed temporary file and a rename."""
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
    replace_atomically(tmp, path)


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """:class:`mmengine.hooks.CheckpointHook` (same arguments) with safe writes.

    * Every checkpoint (``epoch_N.pth`` and ``best_*.pth``) is written to a temporary file in
      the same folder, flushed and renamed into place; a kill or a full disk while writing
      leaves the previous checkpoints as they were.
    * Old checkpoints (beyond ``max_keep_ckpts``, the previous best) are removed only after
      the new one is in place, whatever ``max_keep_ckpts`` says (mmengine removes them
      first, so with ``max_keep_ckpts=1`` a crash while saving left nothing to resume).
    * ``last_checkpoint`` names the checkpoint by file name, written atomically too, so a
      copied work dir resumes from its own files
      (:class:`~ssn_plugin.engine.SafeCheckpointLoaderHook` resolves it inside the work dir).
    """

    @contextlib.contextmanager
    def _atomic_saves(self, runner):
        """Within: ``runner.save_checkpoint`` writes a temporary file, then renames it."""
        if 'save_checkpoint' in vars(runner):  # already inside (the best checkpoint's re-save)
            yield
            return
        save = runner.save_checkpoint

        def save_atomically(out_dir, filename, *args, **kwargs):
            tmp = f'.{filename}.tmp'
            save(out_dir, tmp, *args, **kwargs)
            if is_main_process():
                replace_atomically(osp.join(out_dir, tmp), osp.join(out_dir, filename))

        runner.save_checkpoint = save_atomically
        try:
            yield
        finally:
            del runner.save_checkpoint  # the Runner's own method again

    def _save_checkpoint_with_step(self, runner, step, meta):
        stale = []
        if self.max_keep_ckpts > 0 and (not self.keep_ckpt_ids or self.keep_ckpt_ids[-1] != step):
            # keep_ckpt_ids is a deque(maxlen=max_keep_ckpts): split before it drops silently.
            ids = list(self.keep_ckpt_ids) + [step]
            stale = ids[:-self.max_keep_ckpts]
            self.keep_ckpt_ids.clear()
            self.keep_ckpt_ids.extend(ids[-self.max_keep_ckpts:])
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = osp.join(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        with self._atomic_saves(runner):
            runner.save_checkpoint(
                self.out_dir, filename, self.file_client_args,
                save_optimizer=self.save_optimizer,
                save_param_scheduler=self.save_param_scheduler, meta=meta,
                by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        write_text_atomically(osp.join(runner.work_dir, 'last_checkpoint'), filename)
        for old in stale:
            self._remove(self.filename_tmpl.format(old))

    def _save_best_checkpoint(self, runner, metrics) -> None:
        if not self.save_best:  # mmengine's check, first: without it there are no key_indicators
            return
        previous = (dict(self.best_ckpt_path_dict) if len(self.key_indicators) > 1 else
                    {None: self.best_ckpt_path})
        # mmengine removes the previous best before writing the new one: hide it, remove it
        # below once the new one is written.
        if len(self.key_indicators) > 1:
            self.best_ckpt_path_dict = {key: None for key in self.best_ckpt_path_dict}
        else:
            self.best_ckpt_path = None
        with self._atomic_saves(runner):
            super()._save_best_checkpoint(runner, metrics)
        for key, old in previous.items():
            current = (self.best_ckpt_path_dict.get(key) if key is not None
                       else self.best_ckpt_path)
            if current is None:  # not improved: keep tracking the old best
                if key is None:
                    self.best_ckpt_path = old
                else:
                    self.best_ckpt_path_dict[key] = old
            elif old and osp.basename(old) != osp.basename(current) and is_main_process():
                self._remove(osp.basename(old))

    def _remove(self, filename: str) -> None:
        """Remove a checkpoint file of this run: a file, by name, in the output folder."""
        path = osp.join(self.out_dir, osp.basename(filename))
        if osp.isfile(path):
            os.remove(path)
