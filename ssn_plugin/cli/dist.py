"""Distributed start-up for machines without a GPU."""
import os

import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.runner import Runner


def init_cpu_process_group(cfg: Config) -> bool:
    """Start a torchrun (``--launcher pytorch``) process group on a machine without CUDA.

    mmengine 0.10's ``init_dist`` always calls ``torch.cuda.set_device``, which fails without
    a GPU even with the gloo backend. When ``cfg.launcher == 'pytorch'`` and CUDA is not
    available, we start the group ourselves with the config's backend (which must then be
    gloo); the Runner finds it initialised and skips its own start-up. Everything else is
    left to mmengine.

    Returns:
        bool: whether this function started the process group.
    """
    if cfg.get('launcher', 'none') != 'pytorch' or torch.cuda.is_available():
        return False
    if torch_dist.is_initialized():
        return False
    backend = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('backend', 'nccl')
    if backend != 'gloo':
        raise RuntimeError(
            f'distributed run without a GPU needs the gloo backend, but the config sets '
            f'{backend!r}; add --cfg-options env_cfg.dist_cfg.backend=gloo '
            'model_wrapper_cfg.device_ids=None')
    torch_dist.init_process_group(backend='gloo', rank=int(os.environ['RANK']),
                                  world_size=int(os.environ['WORLD_SIZE']))
    return True


def run_runner(cfg: Config, action: str):
    """Start the process group if needed, build the Runner, call ``runner.<action>()``
    (``'train'`` or ``'test'``), stop the group; returns what the action returns."""
    init_cpu_process_group(cfg)
    runner = Runner.from_cfg(cfg)
    result = getattr(runner, action)()
    shutdown_process_group()
    return result


def shutdown_process_group() -> None:
    """Wait for every rank, then destroy the process group (if any).

    mmengine leaves the group alive when training or testing ends. With gloo, a rank that
    reaches interpreter exit while the group's threads still run can abort ("terminate called
    without an active exception", exit code -6) after all its work is done, failing the
    torchrun job; seen on CPU.
    """
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()
