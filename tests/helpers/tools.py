"""Running the command-line tools from tests: a tiny config over the real recipe, a tool run
in a subprocess, a run of several processes with a deadline, the environment of a dist_*.sh
run."""
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import pytest

from .browser import free_port
from .data import GALLERY_PIPELINE, PROJECT_ROOT, QUERY_PIPELINE, TRAIN_PIPELINE


def write_tiny_config(tmp_path, data_root, clip_file, max_epochs=1) -> str:
    """A config inheriting the real CIRR recipe, shrunk to the tiny model and data."""
    text = f"""
_base_ = [{osp.join(PROJECT_ROOT, 'configs', 'cirr', 'ssn.py')!r}]
model = dict(backbone=dict(arch={clip_file!r}, pretrained=None),
             fusion=dict(num_heads=2, ffn_dim=64))
optim_wrapper = dict(type='OptimWrapper')
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root={data_root!r}, pipeline={TRAIN_PIPELINE!r}))
val_dataloader = dict(batch_size=5, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root={data_root!r}, pipeline={QUERY_PIPELINE!r},
                                   gallery_pipeline={GALLERY_PIPELINE!r}))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs={max_epochs})
default_hooks = dict(logger=dict(interval=1))
"""
    path = tmp_path / 'tiny_cirr_ssn.py'
    path.write_text(text)
    return str(path)


def tool(name: str) -> str:
    """The path of ``tools/<name>``."""
    return osp.join(PROJECT_ROOT, 'tools', name)


def run_tool(args, cwd):
    """Run ``python *args`` in ``cwd``; fail with the output's tail unless it exits 0."""
    result = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


# A multi-process run (torchrun, mp.spawn) of the tests takes under a minute on 2 cores.
DEADLINE_S = 240


def run_with_deadline(args, deadline_s: float = DEADLINE_S, **kwargs):
    """``subprocess.run(args, capture_output=True, text=True, **kwargs)`` that cannot hang.

    After ``deadline_s`` every process the run started (torchrun's workers too, which sit in
    sessions of their own) gets SIGABRT, on which Python processes print the stacks of all
    their threads (``PYTHONFAULTHANDLER`` is set for them), then SIGKILL; the test fails with
    those stacks. A process stuck inside C++ (a gloo peer that never answers) cannot be
    interrupted by pytest-timeout's signal; this bounds it anyway.
    """
    env = dict(kwargs.pop('env', None) or os.environ, PYTHONFAULTHANDLER='1')
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env, **kwargs)
    try:
        stdout, stderr = process.communicate(timeout=deadline_s)
    except subprocess.TimeoutExpired:
        # The tree is read once: a process that dies leaves its children to init. One at a
        # time, so that the stacks do not interleave on the shared stderr.
        tree = [*descendants(process.pid), process.pid]
        for sig, pause in ((signal.SIGABRT, 0.5), (signal.SIGKILL, 0)):
            for pid in tree:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
                time.sleep(pause)
        stdout, stderr = process.communicate()
        pytest.fail(f'{" ".join(map(str, args))[:300]}\ndid not end within {deadline_s} s; '
                    f'the stacks of its processes:\n{(stdout + stderr)[-20000:]}')
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


def proc_stat(pid) -> list:
    """The fields of ``/proc/<pid>/stat`` after the command name (which may hold spaces and
    parentheses): ``[state, ppid, ...]``. FileNotFoundError once the process is gone."""
    with open(f'/proc/{pid}/stat') as f:
        return f.read().rsplit(')', 1)[1].split()


def descendants(pid: int) -> list:
    """The process ids below ``pid`` (children, their children, ...), read from /proc."""
    children = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            parent = int(proc_stat(entry)[1])
        except (OSError, IndexError, ValueError):  # ended meanwhile
            continue
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def dist_env() -> dict:
    """The environment of a dist_*.sh run: a free port, and the venv's python named by PYTHON
    while PATH lacks the venv (as when the venv's python is run without activating it)."""
    bin_dir = osp.dirname(sys.executable)
    path = os.pathsep.join(p for p in os.environ.get('PATH', '').split(os.pathsep)
                           if osp.abspath(p) != osp.abspath(bin_dir))
    return dict(os.environ, PORT=str(free_port()), OMP_NUM_THREADS='1', PYTHON=sys.executable,
                PATH=path)
