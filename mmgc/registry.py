"""mmgc's registries: children of mmengine's root ones, with scope ``mmgc``.

mmgc registers its optimizers, optim wrappers, constructor, hooks, CIFAR backbones and datasets in
mmengine's *root* registries,
so that their bare names (``type='SGDGC'``) resolve under every default scope (``mmdet``, as
``_base_ = 'mmdet::...'`` injects it, ``mmpretrain``, ``mmengine`` or none). These children make
the scoped names (``type='mmgc.SGDGC'``) resolve too: a child falls back to its parent.
"""
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import Registry

OPTIMIZERS = Registry('optimizer', parent=MMENGINE_OPTIMIZERS, scope='mmgc',
                      locations=['mmgc.optim'])
OPTIM_WRAPPERS = Registry('optim_wrapper', parent=MMENGINE_OPTIM_WRAPPERS, scope='mmgc',
                          locations=['mmgc.optim'])
OPTIM_WRAPPER_CONSTRUCTORS = Registry('optimizer wrapper constructor',
                                      parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS, scope='mmgc',
                                      locations=['mmgc.optim'])
MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mmgc', locations=['mmgc.models'])
DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, scope='mmgc', locations=['mmgc.datasets'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='mmgc', locations=['mmgc.hooks'])
