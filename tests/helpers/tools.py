"""Running the command-line tools from tests: a tiny config over the real recipe, a tool run
in a subprocess, the environment of a dist_*.sh run."""
import os
import os.path as osp
import subprocess
import sys

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


def dist_env() -> dict:
    """The environment of a dist_*.sh run: a free port, and the venv's python named by PYTHON
    while PATH lacks the venv (as when the venv's python is run without activating it)."""
    bin_dir = osp.dirname(sys.executable)
    path = os.pathsep.join(p for p in os.environ.get('PATH', '').split(os.pathsep)
                           if osp.abspath(p) != osp.abspath(bin_dir))
    return dict(os.environ, PORT=str(free_port()), OMP_NUM_THREADS='1', PYTHON=sys.executable,
                PATH=path)
