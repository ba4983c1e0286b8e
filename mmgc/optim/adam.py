"""Adam and AdamW with Gradient Centralization: ``AdamGC`` and ``AdamWGC``."""
from mmengine.registry import OPTIMIZERS
from torch.optim import Adam, AdamW

from .base import GC_LOCS, GCOptimizer


@OPTIMIZERS.register_module()
class AdamGC(GCOptimizer, Adam):
    """``torch.optim.Adam`` (L2 decay) with Gradient Centralization.

    - ``gc_loc='grad'`` (default): the moments see ``Phi(g + wd * w)`` (the paper's
      Algorithm 2, the authors' ``Adam_GC``).
    - ``gc_loc='update'``: the moments see ``g + wd * w`` as torch, and the step is
      ``w -= lr * Phi(m_hat / (sqrt(v_hat) + eps))`` (the authors' ``Adam_GCC2``).

    Config::

        optim_wrapper = dict(optimizer=dict(type='AdamGC', lr=1e-3, weight_decay=1e-4,
                                            gc_loc='grad'))

    Args:
        params, lr, betas, eps, weight_decay, amsgrad, maximize, foreach, capturable, fused,
        decoupled_weight_decay: as ``torch.optim.Adam``.
        use_gc (bool): centralize at all; ``False`` is ``torch.optim.Adam``. Default True.
        gc_conv_only (bool): centralize conv weights only (``ndim > 3``). Default False.
        gc_loc (str | bool): ``'grad'`` or ``'update'``; ``True`` / ``False`` are accepted as
            the authors' spelling of them. Default ``'grad'``.

    All three can be set per param group. The state dict is ``Adam``'s.
    """
    gc_locs = GC_LOCS


@OPTIMIZERS.register_module()
class AdamWGC(GCOptimizer, AdamW):
    """``torch.optim.AdamW`` (decoupled decay ``w * (1 - lr * wd)``) with Gradient
    Centralization.

    - ``gc_loc='grad'`` (default): the moments see ``Phi(g)``.
    - ``gc_loc='update'``: ``w_new = w - lr * Phi(m_hat / (sqrt(v_hat) + eps) + wd * w)``, so
      the mean of every weight vector never moves.

    Unlike the authors' AdamW variants (an older decay formula), this keeps torch's, so that
    ``use_gc=False`` is ``torch.optim.AdamW`` exactly.

    Config::

        optim_wrapper = dict(optimizer=dict(type='AdamWGC', lr=1e-4, weight_decay=0.05,
                                            gc_loc='update'))

    Arguments as :class:`AdamGC` (torch's ``AdamW`` ones). The state dict is ``AdamW``'s.
    """
    gc_locs = GC_LOCS
    decay_in_grad = False
