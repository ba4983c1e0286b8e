"""SGD with Gradient Centralization: ``SGDGC`` (L2 decay) and ``SGDWGC`` (decoupled decay)."""
from contextlib import contextmanager
from typing import Iterator, List

import torch
from mmengine.registry import OPTIMIZERS
from torch.optim import SGD

from .base import GCOptimizer


@OPTIMIZERS.register_module()
class SGDGC(GCOptimizer, SGD):
    """``torch.optim.SGD`` on centralized gradients: ``d = Phi(g + wd * w)``, then momentum,
    dampening and nesterov exactly as torch (the authors' ``SGD_GC``; ``SGD_GCC`` with
    ``gc_conv_only=True``).

    Config (mmdet / mmpretrain)::

        optim_wrapper = dict(
            optimizer=dict(type='SGDGC', lr=0.02, momentum=0.9, weight_decay=1e-4))

    Args:
        params, lr, momentum, dampening, weight_decay, nesterov, maximize, foreach, fused:
            as ``torch.optim.SGD``.
        use_gc (bool): centralize at all; ``False`` is ``torch.optim.SGD``. Default True.
        gc_conv_only (bool): centralize conv weights only (``ndim > 3``). Default False.

    ``use_gc`` and ``gc_conv_only`` can be set per param group, e.g. with
    ``GCOptimWrapperConstructor``'s ``paramwise_cfg``. The state dict is ``SGD``'s: an SGD
    checkpoint resumes into ``SGDGC`` and back.
    """


@contextmanager
def _weight_decay_off(param_groups: List[dict]) -> Iterator[None]:
    saved = [group['weight_decay'] for group in param_groups]
    for group in param_groups:
        group['weight_decay'] = 0
    try:
        yield
    finally:
        for group, weight_decay in zip(param_groups, saved):
            group['weight_decay'] = weight_decay


@OPTIMIZERS.register_module()
class SGDWGC(GCOptimizer, SGD):
    """SGD with decoupled weight decay on centralized gradients (the authors' ``SGDW_GCC``):
    ``d = Phi(g)``, momentum as ``torch.optim.SGD``, and
    ``w_new = w - lr * d_final - lr * wd * w``.

    Config::

        optim_wrapper = dict(
            optimizer=dict(type='SGDWGC', lr=0.02, momentum=0.9, weight_decay=1e-4))

    Arguments as :class:`SGDGC`. With ``use_gc=False`` it is SGDW (torch has no such class);
    with ``weight_decay=0`` it equals ``SGDGC``. Its state dict is ``SGD``'s.
    """
    decay_in_grad = False

    def _torch_step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group['params'] if p.grad is not None]
            if params and group['weight_decay'] != 0:
                torch._foreach_mul_(params, 1 - group['lr'] * group['weight_decay'])
        with _weight_decay_off(self.param_groups):
            super()._torch_step()
