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
from typing import Any, Sequence

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
    """``torch.load`` with the types of an mmengine checkpoint allowed (:func:`safe_load`),
    rebuilt as plain data (:func:`plain_data`), without ``meta['config']``.

    The rebuilt copy is what every caller sees: the Runner's resume (message hub, optimizer,
    schedulers), ``load_from``, ``tools/test.py`` and the retriever. ``meta['config']`` (the
    training config as Python text) is dropped: mmengine's ``Runner.resume`` would execute it
    with ``Config.fromstring``, and nothing here needs it.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    checkpoint = plain_data(safe_load(filename, map_location, _safe_globals()), filename)
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get('meta'), dict):
        checkpoint['meta'].pop('config', None)
    return checkpoint


#: Types kept as they are: immutable values with no Python code attached.
_PLAIN_SCALARS = (int, float, complex, bool, str, bytes, type(None))


def plain_data(obj: Any, where: str = 'the file'):
    """A copy of a loaded file made only of plain data: numbers, strings, tensors, numpy
    arrays and scalars of numeric dtypes, fresh ``dict``/``OrderedDict``/``list``/``tuple``
    containers, and :class:`HistoryBuffer` rebuilt from its numbers.

    Why: the weights-only unpickler calls only allowed callables, but it can still return
    objects built from allowed classes with attacker-chosen state, e.g. an ``OrderedDict``
    whose instance ``__dict__`` holds ``__reduce_ex__`` = a bound ``dict.get`` that returns
    ``(eval, ('code', ))``: nothing runs while loading, but ``copy.deepcopy`` (mmengine's
    ``MessageHub.load_state_dict``, torch's ``Optimizer.load_state_dict``) calls it later.
    Every container here is built anew from its items, so no instance state survives, and
    anything else (a function or module reached through ``getattr``, a type) is refused.
    Hence ``getattr`` may stay on the unpickler's allow-list (``HistoryBuffer``'s
    statistics methods are pickled through it): what it returns can be neither called while
    loading nor kept afterwards, apart from those four methods.

    Raises:
        UnsafeFileError: naming the path inside the file of the first object that is not
            plain data.
    """
    kind = type(obj)
    if kind in _PLAIN_SCALARS or kind in (torch.Tensor, torch.nn.Parameter):
        return obj
    if kind is np.ndarray and obj.dtype.kind in 'biufc':
        return np.array(obj, copy=True)
    if isinstance(obj, np.generic) and kind in _NUMPY_SCALARS:
        return obj
    if kind in (dict, collections.OrderedDict):
        return kind((plain_data(k, f'{where}, key {k!r}'), plain_data(v, f'{where}[{k!r}]'))
                    for k, v in obj.items())
    if kind in (list, tuple):
        return kind(plain_data(v, f'{where}[{i}]') for i, v in enumerate(obj))
    if kind is HistoryBuffer:
        return _plain_history_buffer(obj, where)
    if any(obj is method for method in _HISTORY_METHODS):
        return obj
    raise UnsafeFileError(f'{where}: a {kind.__module__}.{kind.__qualname__} is not plain data '
                          '(numbers, strings, tensors, arrays, containers of them); refused, '
                          'as code could reach it later. Only load files you trust.')


_NUMPY_SCALARS = tuple(np.dtype(name).type for name in (
    'float64', 'float32', 'float16', 'int64', 'int32', 'int16', 'int8', 'uint8', 'bool'))
_HISTORY_METHODS = (HistoryBuffer.min, HistoryBuffer.max, HistoryBuffer.current,
                    HistoryBuffer.mean)


def _plain_history_buffer(buffer: HistoryBuffer, where: str) -> HistoryBuffer:
    """A new buffer from the numbers of a loaded one (its instance dict read as data)."""
    state = vars(buffer)
    logs = plain_data(state.get('_log_history', np.zeros(0)), f'{where}._log_history')
    counts = plain_data(state.get('_count_history', np.zeros(0)), f'{where}._count_history')
    max_length = state.get('max_length', 1000000)
    if not (isinstance(logs, np.ndarray) and isinstance(counts, np.ndarray)
            and type(max_length) is int and len(logs) == len(counts)):
        raise UnsafeFileError(f'{where}: a HistoryBuffer whose history is not two arrays of '
                              'equal length and an int max_length; refused')
    return HistoryBuffer(logs, counts, max_length)


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


def check_checkpoint_fits(model: torch.nn.Module, state: dict,
                          new_modules: Sequence[str] = ()) -> None:
    """Refuse a state dict that does not fit ``model``: missing, unexpected or differently
    shaped tensors (mmengine's Runner loads with ``strict=False`` and would only warn, then
    evaluate or train a partly random model). Tensors under the prefixes ``new_modules``
    (e.g. ``'combiner.'``: what a later training stage adds to an earlier stage's model) may
    be missing; nothing else."""
    state = strip_ddp_prefix(state)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.startswith(tuple(new_modules))]
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
