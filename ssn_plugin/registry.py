"""Registries of ssn_plugin (scope ``ssn_plugin``).

Each registry is a child of mmpretrain's registry of the same kind, so a config with
``default_scope = 'ssn_plugin'`` reaches our modules first, then every mmpretrain and mmengine
module. ``locations`` lists the sub-packages that register into each registry: MMEngine imports
them on first use, so a config never needs ``custom_imports`` for our own modules.

A downstream project extends SSN by registering into these registries (or into child
registries of its own whose parents are these)::

    from ssn_plugin.registry import MODELS

    @MODELS.register_module()
    class MyFusion(nn.Module):
        ...
"""
from mmengine.registry import Registry
from mmpretrain.registry import DATA_SAMPLERS as MMPRETRAIN_DATA_SAMPLERS
from mmpretrain.registry import DATASETS as MMPRETRAIN_DATASETS
from mmpretrain.registry import EVALUATORS as MMPRETRAIN_EVALUATORS
from mmpretrain.registry import HOOKS as MMPRETRAIN_HOOKS
from mmpretrain.registry import LOG_PROCESSORS as MMPRETRAIN_LOG_PROCESSORS
from mmpretrain.registry import LOOPS as MMPRETRAIN_LOOPS
from mmpretrain.registry import METRICS as MMPRETRAIN_METRICS
from mmpretrain.registry import MODEL_WRAPPERS as MMPRETRAIN_MODEL_WRAPPERS
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
from mmpretrain.registry import \
    OPTIM_WRAPPER_CONSTRUCTORS as MMPRETRAIN_OPTIM_WRAPPER_CONSTRUCTORS
from mmpretrain.registry import OPTIM_WRAPPERS as MMPRETRAIN_OPTIM_WRAPPERS
from mmpretrain.registry import OPTIMIZERS as MMPRETRAIN_OPTIMIZERS
from mmpretrain.registry import PARAM_SCHEDULERS as MMPRETRAIN_PARAM_SCHEDULERS
from mmpretrain.registry import RUNNER_CONSTRUCTORS as MMPRETRAIN_RUNNER_CONSTRUCTORS
from mmpretrain.registry import RUNNERS as MMPRETRAIN_RUNNERS
from mmpretrain.registry import TASK_UTILS as MMPRETRAIN_TASK_UTILS
from mmpretrain.registry import TRANSFORMS as MMPRETRAIN_TRANSFORMS
from mmpretrain.registry import VISBACKENDS as MMPRETRAIN_VISBACKENDS
from mmpretrain.registry import VISUALIZERS as MMPRETRAIN_VISUALIZERS
from mmpretrain.registry import WEIGHT_INITIALIZERS as MMPRETRAIN_WEIGHT_INITIALIZERS

__all__ = [
    'RUNNERS', 'RUNNER_CONSTRUCTORS', 'LOOPS', 'HOOKS', 'LOG_PROCESSORS', 'OPTIMIZERS',
    'OPTIM_WRAPPERS', 'OPTIM_WRAPPER_CONSTRUCTORS', 'PARAM_SCHEDULERS', 'DATASETS',
    'DATA_SAMPLERS', 'TRANSFORMS', 'MODELS', 'MODEL_WRAPPERS', 'WEIGHT_INITIALIZERS',
    'TASK_UTILS', 'METRICS', 'EVALUATORS', 'VISUALIZERS', 'VISBACKENDS'
]

# ``locations`` also name mmpretrain's sub-package of each kind: a child registry looks names up
# in its parents but does not import the parents' modules, so we import them for it.
_ENGINE = ['mmpretrain.engine']
_DATASETS = ['mmpretrain.datasets']
_MODELS = ['mmpretrain.models']
_EVALUATION = ['mmpretrain.evaluation']
_VISUALIZATION = ['mmpretrain.visualization']

# Registries we register into.
MODELS = Registry('model', parent=MMPRETRAIN_MODELS, locations=['ssn_plugin.models'] + _MODELS)
DATASETS = Registry(
    'dataset', parent=MMPRETRAIN_DATASETS, locations=['ssn_plugin.datasets'] + _DATASETS)
TRANSFORMS = Registry(
    'transform', parent=MMPRETRAIN_TRANSFORMS, locations=['ssn_plugin.datasets'] + _DATASETS)
METRICS = Registry(
    'metric', parent=MMPRETRAIN_METRICS, locations=['ssn_plugin.evaluation'] + _EVALUATION)
HOOKS = Registry('hook', parent=MMPRETRAIN_HOOKS, locations=['ssn_plugin.engine'] + _ENGINE)

# Registries we only forward, so that ``default_scope='ssn_plugin'`` resolves every component
# the Runner builds without falling back (and warning) to another scope.
RUNNERS = Registry('runner', parent=MMPRETRAIN_RUNNERS, locations=_ENGINE)
RUNNER_CONSTRUCTORS = Registry(
    'runner constructor', parent=MMPRETRAIN_RUNNER_CONSTRUCTORS, locations=_ENGINE)
LOOPS = Registry('loop', parent=MMPRETRAIN_LOOPS, locations=_ENGINE)
LOG_PROCESSORS = Registry(
    'log processor', parent=MMPRETRAIN_LOG_PROCESSORS, locations=_ENGINE)
OPTIMIZERS = Registry('optimizer', parent=MMPRETRAIN_OPTIMIZERS, locations=_ENGINE)
OPTIM_WRAPPERS = Registry(
    'optim_wrapper', parent=MMPRETRAIN_OPTIM_WRAPPERS, locations=_ENGINE)
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    'optimizer wrapper constructor', parent=MMPRETRAIN_OPTIM_WRAPPER_CONSTRUCTORS,
    locations=_ENGINE)
PARAM_SCHEDULERS = Registry(
    'parameter scheduler', parent=MMPRETRAIN_PARAM_SCHEDULERS, locations=_ENGINE)
DATA_SAMPLERS = Registry(
    'data sampler', parent=MMPRETRAIN_DATA_SAMPLERS, locations=_DATASETS)
MODEL_WRAPPERS = Registry(
    'model_wrapper', parent=MMPRETRAIN_MODEL_WRAPPERS, locations=_MODELS)
WEIGHT_INITIALIZERS = Registry(
    'weight initializer', parent=MMPRETRAIN_WEIGHT_INITIALIZERS, locations=_MODELS)
TASK_UTILS = Registry('task util', parent=MMPRETRAIN_TASK_UTILS, locations=_MODELS)
EVALUATORS = Registry('evaluator', parent=MMPRETRAIN_EVALUATORS, locations=_EVALUATION)
VISUALIZERS = Registry(
    'visualizer', parent=MMPRETRAIN_VISUALIZERS, locations=_VISUALIZATION)
VISBACKENDS = Registry(
    'vis_backend', parent=MMPRETRAIN_VISBACKENDS, locations=_VISUALIZATION)
