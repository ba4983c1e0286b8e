"""Adam and AdamW with Gradient Centralization: ``AdamGC`` and ``AdamWGC``."""
from typing import List

import torch
from mmengine.registry import OPTIMIZERS
from torch import Tensor
from torch.optim import Adam, AdamW

from mmgc.ops import fused_groups

from .base import GC_LOCS, GCOptimizer


def _new_step_count(group: dict, p: Tensor) -> Tensor:
    """``state['step']`` as torch's Adam creates it for this group (so state dicts match)."""
    fused = bool(group.get('fused'))
    try:
        from torch.optim.optimizer import _get_scalar_dtype
        dtype = _get_scalar_dtype(is_fused=fused)
    except ImportError:  # another torch: its default
        dtype = torch.float32
    if fused or group.get('capturable'):
        return torch.zeros((), dtype=dtype, device=p.device)
    return torch.tensor(0.0, dtype=dtype)


def _fused_adam_step(optimizer: Adam) -> List[Tensor]:
    """GC + Adam(W) of whole param groups in one pass per weight (mmgc/ops/csrc/gc_adam_cpu.cpp
    on CPU, mmgc/ops/gc_triton.py on CUDA), where the kernel supports every tensor of the group.
    Returns the params it stepped."""
    handled: List[Tensor] = []
    for kernels, group, params in fused_groups(optimizer):
        states = [optimizer.state[p] for p in params]
        for p, state in zip(params, states):
            if not state:  # torch's lazy initialization (its first step)
                state['step'] = _new_step_count(group, p)
                state['exp_avg'] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state['exp_avg_sq'] = torch.zeros_like(p, memory_format=torch.preserve_format)
        beta1, beta2 = (float(beta) for beta in group['betas'])
        decoupled = not optimizer.decay_in_grad or group.get('decoupled_weight_decay', False)
        if kernels.gc_adam_(params, [p.grad for p in params], [s['exp_avg'] for s in states],
                            [s['exp_avg_sq'] for s in states], [s['step'] for s in states],
                            group['gc_conv_only'], float(group['lr']), beta1, beta2,
                            float(group['eps']), float(group['weight_decay']), decoupled,
                            group['maximize'], group['gc_loc'] == 'update'):
            handled += params
    return handled


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

    Fused kernels take GC and the whole Adam step in one pass over each weight (see
    ``mmgc.ops``: C++ for float32 / float64 CPU tensors, Triton for CUDA tensors, one launch per
    param group) unless ``amsgrad`` or ``capturable`` is set; everything else takes the plain
    path.
    """
    gc_locs = GC_LOCS

    def _fused_step(self) -> List[Tensor]:
        return _fused_adam_step(self)


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

    Arguments as :class:`AdamGC` (torch's ``AdamW`` ones), and the same CPU fast path. The
    state dict is ``AdamW``'s.
    """
    gc_locs = GC_LOCS
    decay_in_grad = False

    def _fused_step(self) -> List[Tensor]:
        return _fused_adam_step(self)
