"""mmgc: Gradient Centralization for mmengine, mmdet and mmpretrain.

``import mmgc`` (or ``custom_imports=dict(imports=['mmgc'], allow_failed_imports=False)`` in a
config) registers the GC optimizers, optim wrappers and constructor, the ``GCStatsHook``
(``mmgc.hooks``), a ``ZeroRedundancyOptimizer`` that takes GC optimizers by name (``mmgc.dist``,
in place of mmengine's), the CIFAR backbones of the paper's classification configs
(``mmgc.models``) and the digits dataset of ``make demo-cls`` (``mmgc.datasets``; scikit-learn is
imported only when it loads its data) in mmengine's registries, and lets ``torch.load``'s safe
mode read the checkpoints mmengine writes. It needs only torch and mmengine.
"""
from .datasets import DigitsDataset
from .dist import ZeroRedundancyOptimizer
from .gc import centralize_, centralized_update, gc_applies
from .hooks import GCStatsHook
from .models import DenseNetCIFAR, ResNeXtCIFAR
from .optim import (SGDGC, SGDWGC, AdagradGC, AdamGC, AdamWGC, AmpGCOptimWrapper,
                    GCOptimWrapper, GCOptimWrapperConstructor)
from .registry import (DATASETS, HOOKS, MODELS, OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS,
                       OPTIMIZERS)
from .utils import allow_mmengine_checkpoints
from .version import __version__

allow_mmengine_checkpoints()

__all__ = [
    '__version__', 'centralize_', 'centralized_update', 'gc_applies', 'SGDGC', 'SGDWGC',
    'AdamGC', 'AdamWGC', 'AdagradGC', 'GCOptimWrapper', 'AmpGCOptimWrapper',
    'GCOptimWrapperConstructor', 'OPTIMIZERS', 'OPTIM_WRAPPERS', 'OPTIM_WRAPPER_CONSTRUCTORS',
    'MODELS', 'DATASETS', 'allow_mmengine_checkpoints', 'ResNeXtCIFAR', 'DenseNetCIFAR',
    'DigitsDataset', 'GCStatsHook', 'HOOKS', 'ZeroRedundancyOptimizer'
]
