"""SGD with Gradient Centralization: ``SGDGC`` (L2 decay) and ``SGDWGC`` (decoupled decay)."""
from collections import defaultdict
from contextlib import contextmanager
from typing import Dict, Iterator, List, Tuple

import torch
from mmengine.registry import OPTIMIZERS
from torch import Tensor
from torch.optim import SGD

from mmgc.gc import gc_applies
from mmgc.ops import cpu_kernels

from .base import GCOptimizer


def _dense_rows(t: Tensor) -> bool:
    """Every dim-0 slice is one dense block of memory (contiguous or channels_last)."""
    return t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(
        memory_format=torch.channels_last)) or (t.dim() == 5 and t.is_contiguous(
            memory_format=torch.channels_last_3d))


def _fused_supported(p: Tensor, conv_only: bool) -> bool:
    grad = p.grad
    return (p.device.type == 'cpu' and p.dtype in (torch.float32, torch.float64)
            and gc_applies(p, conv_only) and not grad.is_sparse and grad.dtype == p.dtype
            and grad.stride() == p.stride() and _dense_rows(p))


def _fused_sgd_step(optimizer: SGD, decoupled: bool) -> List[Tensor]:
    """GC + SGD(W) in one pass per weight (mmgc/ops/csrc/gc_sgd_cpu.cpp), where supported."""
    kernels = cpu_kernels()
    if kernels is None:
        return []
    handled: List[Tensor] = []
    for group in optimizer.param_groups:
        lr = group['lr']
        if not group['use_gc'] or group['differentiable'] or (isinstance(lr, Tensor)
                                                               and lr.requires_grad):
            continue
        momentum = group['momentum']
        batches: Dict[Tuple[bool, torch.dtype], List[Tensor]] = defaultdict(list)
        for p in group['params']:
            if p.grad is None or not _fused_supported(p, group['gc_conv_only']):
                continue
            buf = optimizer.state[p].get('momentum_buffer') if momentum else None
            if momentum and buf is None:
                batches[True, p.dtype].append(p)  # first step: the kernel writes the buffer
            elif buf is None or (buf.stride() == p.stride() and buf.dtype == p.dtype):
                batches[False, p.dtype].append(p)
        weight_decay = float(group['weight_decay'])
        for (first_step, _), batch in batches.items():
            if momentum and first_step:
                for p in batch:
                    optimizer.state[p]['momentum_buffer'] = torch.empty_like(p)
            kernels.gc_sgd_(
                batch, [p.grad for p in batch],
                [optimizer.state[p]['momentum_buffer'] for p in batch] if momentum else [],
                0.0 if decoupled else weight_decay, weight_decay if decoupled else 0.0,
                float(momentum), float(group['dampening']), float(lr), group['nesterov'],
                group['maximize'], first_step)
            handled += batch
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

    On CPU, float32 / float64 weights take a fused kernel (GC and the whole SGD step in one
    pass over each weight; see ``mmgc.ops``); everything else takes the plain path.
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
