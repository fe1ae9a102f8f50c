"""N processes x B/N = 1 process x B: SSNLoss(gather=True) on the real model, 2 gloo processes.

Each process runs the model on its half of one batch, the loss gathers queries and targets with
gradients, and the gradients are averaged across processes as DDP does. The losses and every
parameter's gradient must equal those of one process with the whole batch.

The two processes never start from the test process itself: a separate Python process spawns
them, they meet through a file (not a TCP port), and the test waits with a deadline
(``run_with_deadline``: on expiry every process prints its stacks and is killed). A hang inside
gloo's C++, twice seen in CI with torch 2.4.1 where pytest-timeout's signal could not interrupt
the test process, then fails in minutes and says where, instead of stalling CI for 90 minutes.
The 1-process check in this process meets through an in-memory store.
"""
import datetime
import os
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mmengine.structures import BaseDataElement

from helpers import TINY_CLIP, run_with_deadline, tiny_ssn_cfg
from ssn_plugin.registry import MODELS

TEXTS = ['make it red', 'remove the dog and add two cats', 'a', 'the same but bigger',
         'blue', 'no people, add a beach and a boat on the left', 'x', 'larger']
LOSS_KEYS = ('loss_con', 'loss_kl')
# (gather, degradation) of the two-process runs, each saved as two_<gather>_<degradation>.pth.
RUNS = ((True, True), (True, False), (False, True))
# A process that cannot reach its peer fails after this, rather than gloo's 30 minutes.
PEER_TIMEOUT = datetime.timedelta(seconds=90)


def build(gather: bool, degradation: bool = True):
    torch.manual_seed(0)  # the same initial weights in every process
    cfg = tiny_ssn_cfg(TINY_CLIP, loss=dict(type='SSNLoss', gather=gather),
                       fusion=dict(type='SSNFusion', num_heads=2, ffn_dim=64, dropout=0.0),
                       degradation=degradation)
    return MODELS.build(cfg).train()


def batch():
    generator = torch.Generator().manual_seed(1)
    ref = torch.randn(len(TEXTS), 3, 32, 32, generator=generator)
    tgt = torch.randn(len(TEXTS), 3, 32, 32, generator=generator)
    return ref, tgt, [BaseDataElement(metainfo=dict(text=t)) for t in TEXTS]


def step(model, part: slice):
    ref, tgt, samples = batch()
    losses = model.loss(dict(ref_img=ref[part], tgt_img=tgt[part]), samples[part])
    keys = [k for k in LOSS_KEYS if k in losses]
    sum(losses[k] for k in keys).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: losses[k].detach() for k in keys}, grads


def worker(rank: int, world: int, rendezvous: str, gather: bool, out: str, degradation: bool):
    dist.init_process_group('gloo', init_method=f'file://{rendezvous}', rank=rank,
                            world_size=world, timeout=PEER_TIMEOUT)
    torch.set_num_threads(1)
    per = len(TEXTS) // world
    losses, grads = step(build(gather, degradation), slice(rank * per, (rank + 1) * per))
    for grad in grads.values():  # DDP: the mean over processes
        dist.all_reduce(grad)
        grad /= world
    if rank == 0:
        torch.save(dict(losses=losses, grads=grads), out)
    dist.barrier()
    dist.destroy_process_group()


def spawn_runs(out_dir: str):
    """Entry point of the separate process: the RUNS, two gloo processes each."""
    for gather, degradation in RUNS:
        name = f'{gather}_{degradation}'
        mp.spawn(worker, nprocs=2, join=True,
                 args=(2, os.path.join(out_dir, f'rendezvous_{name}'), gather,
                       os.path.join(out_dir, f'two_{name}.pth'), degradation))


def run_two_processes(tmp_path) -> dict:
    """The RUNS' results, {(gather, degradation): saved dict}, from a separate process."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '1'),
               # The same modules as this process (mutation testing puts its mutants first).
               PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), *sys.path]))
    code = f'import {__name__.rsplit(".", 1)[-1]} as t, sys; t.spawn_runs(sys.argv[1])'
    result = run_with_deadline([sys.executable, '-c', code, str(tmp_path)], env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-20000:]
    return {run: torch.load(str(tmp_path / f'two_{run[0]}_{run[1]}.pth'), weights_only=True)
            for run in RUNS}


def check_gather_in_this_process():
    """The autograd gather on a 1-process group: identity forward, identity gradient. Run in
    this process also so that tools that trace calls (mutation testing) see the function; the
    group meets through an in-memory store (no port, no thread waiting on a peer)."""
    from ssn_plugin.models.losses import _GatherWithGrad
    dist.init_process_group('gloo', store=dist.HashStore(), rank=0, world_size=1,
                            timeout=PEER_TIMEOUT)
    try:
        x = torch.randn(3, 4, requires_grad=True)
        y = _GatherWithGrad.apply(x)
        (y * torch.arange(4.0)).sum().backward()
        assert torch.equal(y, x) and torch.equal(x.grad, torch.arange(4.0).expand(3, 4))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_equal_one_with_the_whole_batch(tmp_path):
    check_gather_in_this_process()
    single_losses, single_grads = step(build(gather=True), slice(None))
    runs = run_two_processes(tmp_path)
    two = runs[True, True]
    for key in LOSS_KEYS:
        assert torch.allclose(two['losses'][key], single_losses[key], rtol=1e-5, atol=1e-6), key
    assert set(two['grads']) == set(single_grads)
    # Float sums run in another order (each process trims captions to its own longest one), so
    # compare each gradient tensor against its own scale; measured worst case 4.9e-6.
    worst = max(float((two['grads'][n] - g).abs().max() / g.abs().max().clamp(min=1e-12))
                for n, g in single_grads.items())
    assert worst < 5e-5, worst

    # Degradation off (no complementary branch): gathering skips the missing q-.
    no_kl = runs[True, False]['losses']
    assert set(no_kl) == {'loss_con'} and no_kl['loss_con'] > 0
    # Without gathering each process only sees its half: a different objective.
    local = runs[False, True]['losses']
    assert not torch.allclose(local['loss_con'], single_losses['loss_con'])
