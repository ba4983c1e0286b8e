"""mmgc: Gradient Centralization for mmengine, mmdet and mmpretrain.

``import mmgc`` (or ``custom_imports=dict(imports=['mmgc'], allow_failed_imports=False)`` in a
config) registers the GC optimizers, optim wrappers and constructor in mmengine's registries, and
lets ``torch.load``'s safe mode read the checkpoints mmengine writes. It needs only torch and
mmengine.
"""
from .gc import centralize_, centralized_update, gc_applies
from .optim import (SGDGC, SGDWGC, AdagradGC, AdamGC, AdamWGC, AmpGCOptimWrapper,
                    GCOptimWrapper, GCOptimWrapperConstructor)
from .registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS
from .utils import allow_mmengine_checkpoints
from .version import __version__

allow_mmengine_checkpoints()

__all__ = [
    '__version__', 'centralize_', 'centralized_update', 'gc_applies', 'SGDGC', 'SGDWGC',
    'AdamGC', 'AdamWGC', 'AdagradGC', 'GCOptimWrapper', 'AmpGCOptimWrapper',
    'GCOptimWrapperConstructor', 'OPTIMIZERS', 'OPTIM_WRAPPERS', 'OPTIM_WRAPPER_CONSTRUCTORS',
    'allow_mmengine_checkpoints'
]
