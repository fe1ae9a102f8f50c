"""Load MMEngine checkpoints on torch >= 2.6 (mmengine issue #1655).

torch 2.6 made ``torch.load(weights_only=True)`` the default. mmengine 0.10.x calls
``torch.load`` without the argument, and its checkpoints hold more than tensors (the message
hub's ``HistoryBuffer`` with numpy arrays, numpy scalars in ``meta``), so resuming or testing
a checkpoint that ``tools/train.py`` wrote fails with an "Unsupported global" error.

:func:`install_checkpoint_loader` replaces mmengine's loader for local files by
:func:`load_local_checkpoint`, which keeps ``weights_only=True`` and allows exactly the extra
types an mmengine checkpoint contains; arbitrary pickled objects are still refused. One place
installs it: :class:`~ssn_plugin.engine.SafeCheckpointLoaderHook` (in ``default_runtime.py``),
before the Runner loads or resumes anything. Code outside a Runner (the retriever) calls
:func:`load_local_checkpoint` itself.
"""
import codecs
import collections
import contextlib
import os.path as osp
import pickle
from typing import Sequence

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader


def _safe_globals() -> list:
    # codecs.encode: numpy < 2 pickles array bytes through it (torch >= 2.6 allows it too).
    allowed = [HistoryBuffer, np.ndarray, np.dtype, collections.OrderedDict, getattr,
               codecs.encode]
    # numpy pickles arrays and scalars through these helpers (module path differs by version).
    for module_name in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        module = getattr(np, module_name.split('.')[1], None)
        multiarray = getattr(module, 'multiarray', None)
        if multiarray is not None:
            allowed += [multiarray._reconstruct, multiarray.scalar]
            break
    allowed += [type(np.dtype(name)) for name in (
        'float64', 'float32', 'float16', 'int64', 'int32', 'int16', 'int8', 'uint8', 'bool')]
    return allowed


class UnsafeFileError(pickle.UnpicklingError):
    """A file to load holds pickled objects outside the allowed types (it could run code)."""


def safe_load(filename: str, map_location=None, allowed: Sequence = ()):
    """``torch.load(weights_only=True)`` with ``allowed`` extra types; anything else in the
    file (a callable, a ``__reduce__`` of another class) is refused with
    :class:`UnsafeFileError` before it runs.

    ``builtins.getattr`` is among the types of an mmengine checkpoint (``HistoryBuffer`` pickles
    its statistics methods as ``getattr(HistoryBuffer, 'mean')``). It can look attributes up,
    but the unpickler only *calls* allowed callables, so a function or bound method reached by a
    ``getattr`` chain is refused when the file tries to call it (tested).
    """
    try:
        with _allowing(list(allowed)):
            return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeFileError(
            f'{filename} holds pickled objects that are not allowed in this file (refused '
            f'before any of them ran; only load files you trust): {err}') from err


def load_local_checkpoint(filename: str, map_location=None):
    """``torch.load`` with the types of an mmengine checkpoint allowed (:func:`safe_load`)."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return safe_load(filename, map_location, _safe_globals())


def _allowing(allowed: list):
    """torch >= 2.5: a context that allows ``allowed``; torch 2.4 has only the process-wide
    ``add_safe_globals`` (the same types, for the rest of the process)."""
    if hasattr(torch.serialization, 'safe_globals'):
        return torch.serialization.safe_globals(allowed)
    torch.serialization.add_safe_globals(allowed)
    return contextlib.nullcontext()


def install_checkpoint_loader() -> None:
    """Make mmengine load local checkpoints through :func:`load_local_checkpoint`.

    On every torch version: before 2.6 mmengine's own ``torch.load`` would unpickle anything.
    """
    CheckpointLoader.register_scheme(prefixes='', loader=load_local_checkpoint, force=True)


def strip_ddp_prefix(state: dict) -> dict:
    """The state dict with the ``module.`` prefix of a DDP-wrapped model removed."""
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}


def check_checkpoint_fits(model: torch.nn.Module, state: dict) -> None:
    """Refuse a state dict that does not fit ``model``: missing, unexpected or differently
    shaped tensors (mmengine's Runner loads with ``strict=False`` and would only warn, then
    evaluate or train a partly random model)."""
    state = strip_ddp_prefix(state)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f'{k} {tuple(state[k].shape)} in the checkpoint, {tuple(v.shape)} in the model'
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if not (missing or unexpected or shapes):
        return
    problems = [f'{len(items)} {what} (first: {items[0]})' for items, what in (
        (shapes, 'tensors of another shape'), (missing, 'tensors missing'),
        (unexpected, 'tensors the model does not have')) if items]
    raise ValueError(
        'the checkpoint does not fit the model of this config, was it trained with another '
        f'architecture (backbone arch, widths, fusion)?: {"; ".join(problems)}. To load only '
        "the matching part on purpose, set dict(type='SafeCheckpointLoaderHook', strict=False)"
        ' in custom_hooks.')
