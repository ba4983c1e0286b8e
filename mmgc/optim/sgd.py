"""SGD with Gradient Centralization: ``SGDGC`` (L2 decay) and ``SGDWGC`` (decoupled decay)."""
from contextlib import contextmanager
from typing import Iterator, List

import torch
from mmengine.registry import OPTIMIZERS
from torch import Tensor
from torch.optim import SGD

from mmgc.ops import fused_groups

from .base import GCOptimizer


def _fused_sgd_step(optimizer: SGD, decoupled: bool) -> List[Tensor]:
    """GC + SGD(W) of whole param groups in one pass per weight (mmgc/ops/csrc/gc_sgd_cpu.cpp on
    CPU, mmgc/ops/gc_triton.py on CUDA), where the kernel supports every tensor of the group.
    Returns the params it stepped."""
    handled: List[Tensor] = []
    for kernels, group, params in fused_groups(optimizer):
        momentum = group['momentum']
        states = [optimizer.state[p] for p in params] if momentum else []
        before = [s.get('momentum_buffer') for s in states]
        weight_decay = float(group['weight_decay'])
        done, bufs = kernels.gc_sgd_(
            params, [p.grad for p in params], before, group['gc_conv_only'],
            0.0 if decoupled else weight_decay, weight_decay if decoupled else 0.0,
            float(momentum), float(group['dampening']), float(group['lr']), group['nesterov'],
            group['maximize'])
        if not done:
            continue
        for state, old, buf in zip(states, before, bufs):
            if buf is not old:  # (a new buffer: torch's first step)
                state['momentum_buffer'] = buf
        handled += params
    return handled


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

    Fused kernels take GC and the whole SGD step in one pass over each weight (see
    ``mmgc.ops``): compiled C++ for float32 / float64 CPU tensors, Triton for CUDA tensors
    (float32, float16, bfloat16, float64; one launch per param group); everything else takes
    the plain path.
    """

    def _fused_step(self) -> List[Tensor]:
        return _fused_sgd_step(self, decoupled=False)


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

    def _fused_step(self) -> List[Tensor]:
        return _fused_sgd_step(self, decoupled=True)

    def _torch_step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group['params'] if p.grad is not None]
            if params and group['weight_decay'] != 0:
                torch._foreach_mul_(params, 1 - group['lr'] * group['weight_decay'])
        with _weight_decay_off(self.param_groups):
            super()._torch_step()
