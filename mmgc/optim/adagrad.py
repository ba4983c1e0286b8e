"""Adagrad with Gradient Centralization: ``AdagradGC``."""
from mmengine.registry import OPTIMIZERS
from torch.optim import Adagrad

from .base import GC_LOCS, GCOptimizer


@OPTIMIZERS.register_module()
class AdagradGC(GCOptimizer, Adagrad):
    """``torch.optim.Adagrad`` with Gradient Centralization.

    - ``gc_loc='grad'`` (default): the accumulator and the step see ``Phi(g + wd * w)``
      (the authors' ``Adagrad_GC``).
    - ``gc_loc='update'``: the accumulator sees ``g + wd * w`` as torch, and the step is
      centralized: ``w -= clr * Phi(g' / (sqrt(sum) + eps))``.

    Config::

        optim_wrapper = dict(optimizer=dict(type='AdagradGC', lr=1e-2, weight_decay=1e-4))

    Args:
        params, lr, lr_decay, weight_decay, initial_accumulator_value, eps, foreach,
        maximize, fused: as ``torch.optim.Adagrad``.
        use_gc, gc_conv_only, gc_loc: as :class:`AdamGC`.

    The state dict is ``Adagrad``'s.
    """
    gc_locs = GC_LOCS
