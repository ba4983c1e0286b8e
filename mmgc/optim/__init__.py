from .adagrad import AdagradGC
from .adam import AdamGC, AdamWGC
from .base import GCOptimizer, gc_step
from .constructor import GCOptimWrapperConstructor
from .optim_wrapper import AmpGCOptimWrapper, GCOptimWrapper
from .sgd import SGDGC, SGDWGC

__all__ = [
    'SGDGC', 'SGDWGC', 'AdamGC', 'AdamWGC', 'AdagradGC', 'GCOptimizer', 'gc_step',
    'GCOptimWrapper', 'AmpGCOptimWrapper', 'GCOptimWrapperConstructor'
]
