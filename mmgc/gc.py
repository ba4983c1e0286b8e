"""The Gradient Centralization operator (Yong et al., ECCV 2020, Eq. 1).

For a weight whose dim 0 indexes output channels, every slice ``g[i]`` loses its mean::

    Phi(g)[i] = g[i] - mean(g[i])

This module is the only place in mmgc that takes a slice mean in Python. Everything else (the
GC optimizers, the GC optim wrappers) calls :func:`centralize_` or :func:`centralized_update`;
the one exception is the fused kernels of ``SGDGC`` / ``SGDWGC`` / ``AdamGC`` / ``AdamWGC``
(``mmgc/ops``: C++ on CPU, Triton on CUDA), which take the same means inside the step (with the
same rule for which tensors are centralized) and are tested against this module. For tensors
whose dim-0 slices are whole blocks of memory (float32 / float64 on CPU; float32, float16,
bfloat16 and float64 on CUDA), :func:`centralize_` itself runs a kernel (``gc_centralize_cpu.cpp``,
``gc_triton.py``) that reads and writes each value once; ``fast=False`` never does.

Which tensors are centralized (see :func:`gc_applies`): ``ndim > 1`` (conv and fc weights), or
``ndim > 3`` with ``conv_only=True``; never 1-D tensors, and never slices of a single element
(``M == 1``), where ``Phi`` would be the zero map and freeze the weight. ConvTranspose weights are
``(C_in, C_out / groups, k...)``: like the authors' code, mmgc centralizes their dim-0 slices.
Any memory layout works (channels_last included); means of fp16 / bf16 tensors are accumulated
in float32. A tensor listed twice is centralized once.

Sharded tensors: a ``DTensor`` whose dim-0 slices are whole on every rank (placements
``Shard(0)`` or ``Replicate``, as FSDP2's ``fully_shard`` makes them, uneven or empty shards
included) is centralized through its local shard, with no communication. A ``DTensor`` that splits
a slice across ranks (``Shard(d)`` with ``d > 0``, ``Partial``) is refused with a ``ValueError``:
the slice means would need the other ranks' values.

Example::

    >>> from mmgc.gc import centralize_
    >>> grads = [p.grad for p in model.parameters() if p.grad is not None]
    >>> centralize_(grads)                       # every conv / fc slice now sums to zero
"""
import math
from contextlib import contextmanager
from typing import Iterator, List, Optional, Sequence

import torch
from torch import Tensor

from mmgc.ops import kernel_tensor, kernels_for

__all__ = ['gc_applies', 'centralize_', 'centralized_update']

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def gc_applies(tensor: Tensor, conv_only: bool = False) -> bool:
    """Whether GC centralizes ``tensor``: conv / fc weights with more than one value per slice."""
    return shape_applies(tensor.shape, conv_only)


def shape_applies(shape: Sequence[int], conv_only: bool = False) -> bool:
    """:func:`gc_applies` for a weight of this shape (one FSDP holds flattened, say)."""
    numel = math.prod(shape)
    return len(shape) >= (4 if conv_only else 2) and numel > 0 and numel > shape[0]


def _mean_dims(tensor: Tensor) -> tuple:
    return tuple(range(1, tensor.dim()))


def _slice_means(tensors: Sequence[Tensor], fast: bool) -> List[Tensor]:
    """Mean of every dim-0 slice, shaped ``(C, 1, ..., 1)``; float32 for low-precision input."""
    if not fast:
        return [t.double().mean(dim=_mean_dims(t), keepdim=True).to(
            torch.float32 if t.dtype in _LOW_PRECISION else t.dtype) for t in tensors]
    return [
        t.mean(dim=_mean_dims(t), keepdim=True,
               dtype=torch.float32 if t.dtype in _LOW_PRECISION else None) for t in tensors
    ]


def _subtract_(tensors: Sequence[Tensor], means: Sequence[Tensor], fast: bool) -> None:
    if not fast:
        for t, m in zip(tensors, means):
            t.sub_(m)
        return
    torch._foreach_sub_(list(tensors), list(means))


def _centralized_in_kernel_(tensors: List[Tensor], params: List[Tensor], decay: float) -> bool:
    """A fused kernel's centralization (C++ on CPU, Triton on CUDA), when it takes all of
    ``tensors`` (else nothing done). Tensor subclasses (``DTensor``, ...), meta and sparse
    tensors never reach the CPU one (see :func:`mmgc.ops.kernel_tensor`); the Triton one
    checks its tensors itself."""
    kernels = kernels_for(tensors[0].device)
    if kernels is None:
        return False
    if not getattr(kernels, 'checks_tensors', False) and (
            not all(map(kernel_tensor, tensors)) or not all(map(kernel_tensor, params))):
        return False
    return kernels.gc_centralize_(tensors, params, decay)


def _dtensor_type() -> Optional[type]:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch without distributed support
        return None
    return DTensor


_PLAIN = (Tensor, torch.nn.Parameter)


def _whole_slices_local(tensor: Tensor) -> Tensor:
    """``tensor`` itself, or for a ``DTensor`` whose dim-0 slices are whole on each rank, the
    shard this rank holds (a view of its memory: centralizing it centralizes the DTensor).
    Raises ``ValueError`` for a ``DTensor`` that splits slices across ranks."""
    if type(tensor) in _PLAIN:
        return tensor
    dtensor = _dtensor_type()
    if dtensor is None or not isinstance(tensor, dtensor):
        return tensor
    from torch.distributed.tensor import Replicate, Shard
    for placement in tensor.placements:
        whole = isinstance(placement, Replicate) or (isinstance(placement, Shard)
                                                     and placement.dim == 0)
        if not whole:
            raise ValueError(
                'Gradient Centralization needs every dim-0 slice of a DTensor whole on one rank '
                f'(placements Shard(0) or Replicate); got placements {tuple(tensor.placements)} '
                f'for a tensor of shape {tuple(tensor.shape)}. FSDP2 (fully_shard) gives '
                'Shard(0) unless its shard_placement_fn says otherwise; tensor parallelism that '
                'splits the input dim (RowwiseParallel) cannot be centralized locally: leave '
                'those weights out of GC (use_gc=False in their param group)')
    return tensor.to_local()


def _local_pairs(tensors: List[Tensor], params: List[Tensor]) -> tuple:
    """:func:`_whole_slices_local` of ``tensors`` (and of their ``params``, which must be laid
    out alike), less the tensors with no rows on this rank."""
    if all(type(t) in _PLAIN for t in tensors) and all(type(p) in _PLAIN for p in params):
        return tensors, params  # (every step of the plain path comes here: keep it short)
    for t, p in zip(tensors, params):
        layouts = [(getattr(x, 'device_mesh', None), tuple(getattr(x, 'placements', ())))
                   for x in (t, p)]
        if layouts[0] != layouts[1]:
            raise ValueError('centralize_: a tensor and its param must be sharded alike, got '
                             f'placements {layouts[0][1]} and {layouts[1][1]}')
    local = [_whole_slices_local(t) for t in tensors]
    local_params = [_whole_slices_local(p) for p in params]
    keep = [i for i, t in enumerate(local) if t.numel() > 0]
    if len(keep) < len(local):
        local = [local[i] for i in keep]
        local_params = [local_params[i] for i in keep] if params else []
    return local, local_params


def _select(tensors: Sequence[Tensor], conv_only: bool) -> List[int]:
    """Indices of the tensors GC centralizes, each distinct tensor once (its first occurrence):
    a tensor listed twice (a parameter twice in a param group) must lose its means once."""
    seen = set()
    index = []
    for i, t in enumerate(tensors):
        if id(t) not in seen and gc_applies(t, conv_only):
            seen.add(id(t))
            index.append(i)
    return index


@torch.no_grad()
def centralize_(tensors: Sequence[Tensor],
                conv_only: bool = False,
                *,
                params: Optional[Sequence[Tensor]] = None,
                decay: float = 0.0,
                fast: bool = True) -> None:
    """Centralize ``tensors`` in place: ``t[i] -= mean(t[i] + decay * p[i])`` per slice ``i``.

    With ``decay == 0`` (the default) this is ``Phi``. With ``params`` and ``decay`` given it
    shifts each tensor so that ``t + decay * p`` is centralized: a GC optimizer whose torch step
    adds L2 decay ``wd * w`` to the gradient passes ``decay=wd`` and so gets ``Phi(g + wd * w)``
    (GC after L2 decay, as the paper's Sec. 3.4) without a temporary ``g + wd * w``.

    Args:
        tensors: gradients (or any tensors); ineligible ones (see :func:`gc_applies`) are skipped,
            and a tensor listed twice is centralized once.
        conv_only: centralize only tensors with ``ndim > 3`` (the authors' ``*_GCC``).
        params: tensors paired with ``tensors``; needed when ``decay != 0``.
        decay: coefficient of ``params`` inside the mean.
        fast: the grouped implementation (on CPU, the compiled kernel where it applies);
            ``False`` runs the plain per-tensor reference path (float64 accumulation), kept for
            checking the fast one.
    """
    index = _select(tensors, conv_only)
    if not index:
        return
    selected = [tensors[i] for i in index]
    for t in selected:
        if t.layout != torch.strided:
            raise ValueError('Gradient Centralization does not support sparse tensors '
                             f'(got a {t.layout} tensor of shape {tuple(t.shape)})')
    if decay != 0 and params is None:
        raise ValueError('centralize_: decay != 0 needs the params paired with tensors')
    paired = [params[i] for i in index] if decay != 0 else []
    selected, paired = _local_pairs(selected, paired)
    if not selected:
        return
    if fast and _centralized_in_kernel_(selected, paired, decay):
        return
    means = _slice_means(selected, fast)
    if decay != 0:
        param_means = _slice_means(paired, fast)
        if fast:
            torch._foreach_add_(means, param_means, alpha=decay)
        else:
            means = [m + decay * pm for m, pm in zip(means, param_means)]
    _subtract_(selected, means, fast)


@contextmanager
def centralized_update(params: Sequence[Tensor],
                       conv_only: bool = False,
                       *,
                       fast: bool = True) -> Iterator[None]:
    """Centralize whatever step the ``with`` body applies to ``params``.

    On exit every eligible parameter becomes ``w_old + Phi(w_new - w_old)``: its slice means are
    those it had on entry (a parameter listed twice is counted once). Only the slice means of
    ``w_old`` are kept, and only while the body runs. This is GC on the update
    (``gc_loc='update'``) of any optimizer::

        with centralized_update(params):
            optimizer.step()
    """
    selected = [params[i] for i in _select(params, conv_only)]
    with torch.no_grad():
        local, _ = _local_pairs(selected, [])
        before = _slice_means(local, fast) if local else []
    yield
    if not local:
        return
    with torch.no_grad():
        local, _ = _local_pairs(selected, [])  # (the shards the step left)
        shift = _slice_means(local, fast)
        if fast:
            torch._foreach_sub_(shift, before)
        else:
            shift = [after - b for after, b in zip(shift, before)]
        _subtract_(local, shift, fast)
