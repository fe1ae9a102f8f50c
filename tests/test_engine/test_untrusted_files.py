"""Files from strangers cannot run code: every loader of the project refuses malicious pickles.

Two attacks, each writing a marker file if it ever runs: a ``__reduce__`` that calls
``os.system``, and a ``getattr`` chain (``getattr`` is allowed for mmengine checkpoints) that walks
from an allowed class to ``eval`` through function globals and calls it. The plain unpickler
runs both (so the files really are malicious); ours refuse both before anything runs.
"""
import os
import os.path as osp
import pickle

import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

from helpers import PROJECT_ROOT, TINY_CLIP
from ssn_plugin.engine import UnsafeFileError, install_checkpoint_loader, load_local_checkpoint


class Call:
    """Pickles as ``fn(*args)``; ``fn`` may itself be a pickled expression."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __call__(self, *args):  # pickle wants the reduce function to be callable
        raise AssertionError('never called while pickling')

    def __reduce__(self):
        return self.fn, self.args


def attr(obj, name):
    return Call(getattr, obj, name)


def malicious_files(tmp_path):
    marker = tmp_path / 'pwned'
    command = f'touch {marker}'
    reduce_attack = Call(os.system, command)
    # HistoryBuffer.__init__.__globals__.get('__builtins__').get('eval')("...os.system...")
    globals_get = attr(attr(attr(HistoryBuffer, '__init__'), '__globals__'), 'get')
    builtins_get = attr(Call(globals_get, '__builtins__'), 'get')
    getattr_chain = Call(Call(builtins_get, 'eval'), f"__import__('os').system({command!r})")
    files = {}
    for name, payload in (('reduce', reduce_attack), ('getattr_chain', getattr_chain)):
        path = tmp_path / f'{name}.pth'
        torch.save(dict(state_dict=dict(w=torch.ones(1)), meta=dict(x=payload)), path)
        files[name] = str(path)
    return files, marker


def test_the_files_are_really_malicious(tmp_path):
    files, marker = malicious_files(tmp_path)
    for path in files.values():
        torch.load(path, weights_only=False)  # the unsafe default of torch < 2.6
        assert marker.exists()
        marker.unlink()


@pytest.mark.parametrize('attack', ['reduce', 'getattr_chain'])
def test_every_loader_refuses_them(tmp_path, attack):
    files, marker = malicious_files(tmp_path)
    path = files[attack]
    with pytest.raises(UnsafeFileError, match=f'{path} holds pickled objects'):
        load_local_checkpoint(path)
    install_checkpoint_loader()  # what SafeCheckpointLoaderHook does before a run loads
    with pytest.raises(pickle.UnpicklingError):
        CheckpointLoader.load_checkpoint(path, map_location='cpu')

    from ssn_plugin.apis import CIRRetriever
    retriever = CIRRetriever(osp.join(PROJECT_ROOT, 'configs', 'demo', 'ssn_shapes.py'),
                             device='cpu')
    with pytest.raises(UnsafeFileError):
        retriever.load_index(path)
    with pytest.raises(UnsafeFileError):
        CIRRetriever(osp.join(PROJECT_ROOT, 'configs', 'demo', 'ssn_shapes.py'), path,
                     device='cpu')
    from ssn_plugin.models import OpenCLIPBackbone
    with pytest.raises(pickle.UnpicklingError):  # open_clip's loader, weights_only=True
        OpenCLIPBackbone(TINY_CLIP, pretrained=path)
    assert not marker.exists()
