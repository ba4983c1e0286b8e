"""Exact GC on the flat shards of FSDP (``torch.distributed.fsdp.FullyShardedDataParallel``,
"FSDP1", as mmengine's ``FSDPStrategy`` wraps models).

FSDP1 concatenates the parameters of each wrapped unit into one 1-D ``FlatParameter`` and gives
every rank a contiguous piece of it. The optimizer then sees 1-D tensors:

- with ``use_orig_params=True`` (mmengine's default), each original parameter becomes a 1-D view
  of the part of it this rank holds (possibly empty);
- with ``use_orig_params=False``, the ``FlatParameter`` shard itself, many weights end to end.

A row of a conv / fc weight (one output channel's slice) can straddle two ranks, so its mean is
not local. mmgc computes it exactly with one small all-reduce: each rank sums the values of every
row it holds part of, the ranks add these sums up (one value per output channel: ``C`` numbers per
weight, in float64), and every rank subtracts ``sum / M`` from its own values. GC on the update
(``gc_loc='update'``) does the same with the change the step made to the weights.

The layout (which weight, which part of its flattening, which ranks) is read from FSDP's own
records: the first time a GC step meets a parameter FSDP flattened, one pass over the live objects
finds FSDP's ``FlatParamHandle`` objects (tens of milliseconds, once). A flattened parameter whose
layout cannot be found is an error, never a silent step without GC.
"""
import gc
import math
import threading
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = ['FlatShard', 'Segment', 'FlatJob', 'FlatUpdate', 'centralize_flat_', 'flat_shard',
           'fsdp_flattened', 'reduced_row_sums', 'subtract_row_means_', 'row_sums_']


class Segment(NamedTuple):
    """Part of one weight held, flattened, in a 1-D tensor.

    Attributes:
        offset: where the part starts in the 1-D tensor.
        numel: how many values it holds (0: none on this rank).
        start: index of its first value in the weight's row-major flattening.
        shape: the weight's full shape.
    """
    offset: int
    numel: int
    start: int
    shape: torch.Size


class FlatShard(NamedTuple):
    """What a 1-D tensor FSDP gave the optimizer holds: ``segments`` (every weight of the
    tensor, those with no values on this rank included, in FSDP's order, the same on every rank)
    and ``group``, the process group over which the parts of a weight are spread."""
    segments: Tuple[Segment, ...]
    group: Any


class FlatJob(NamedTuple):
    """One tensor to centralize through its :class:`FlatShard`: ``tensor`` (a gradient, or the
    parameter for GC on the update; None where this rank has none), ``param`` and ``decay`` (the
    coefficient of ``param`` inside the means, as :func:`mmgc.gc.centralize_`), ``conv_only``."""
    tensor: Optional[Tensor]
    param: Tensor
    shard: FlatShard
    decay: float
    conv_only: bool


# Parameter -> FlatShard, or _WHOLE for one FSDP left unflattened (NO_SHARD with
# use_orig_params=True: its own full shape). Keyed weakly: a freed model leaves nothing behind.
_WHOLE = FlatShard((), None)
_lock = threading.Lock()
_layouts: Any = None


def _layout_table() -> Any:
    global _layouts
    if _layouts is None:
        from torch.utils.weak import WeakIdKeyDictionary
        _layouts = WeakIdKeyDictionary()
    return _layouts


def fsdp_flattened(tensor: Tensor) -> bool:
    """Whether FSDP1 manages ``tensor`` (it marks the parameters it flattens)."""
    return bool(getattr(tensor, '_fsdp_flattened', False))


def _record(handle: Any, table: Any) -> None:
    """Records the layout of every parameter of one ``FlatParamHandle``."""
    flat = handle.flat_param
    if not handle.uses_sharded_strategy:  # NO_SHARD: every weight whole on every rank
        if flat._params is not None:  # use_orig_params=True: full-shape views, as without FSDP
            for param in flat._params:
                table[param] = _WHOLE
            return
        # The FlatParameter itself: the weights end to end (no alignment padding without
        # use_orig_params), nothing to add up across ranks.
        offset, segments = 0, []
        for shape in flat._shapes:
            segments.append(Segment(offset, math.prod(shape), 0, torch.Size(shape)))
            offset += math.prod(shape)
        table[flat] = FlatShard(tuple(segments), None)
        return
    group = handle.process_group if int(getattr(handle, 'world_size', 2)) > 1 else None
    segments = []
    for info, shape in zip(flat._shard_param_infos, flat._shapes):
        if info.in_shard:
            segments.append(Segment(int(info.offset_in_shard), int(info.numel_in_shard),
                                    int(info.intra_param_start_idx), torch.Size(shape)))
        else:
            segments.append(Segment(0, 0, 0, torch.Size(shape)))
    if flat._params is None:  # use_orig_params=False: the optimizer has the FlatParameter
        table[flat] = FlatShard(tuple(segments), group)
        return
    for param, segment in zip(flat._params, segments):  # each parameter a 1-D piece of itself
        table[param] = FlatShard((segment._replace(offset=0), ), group)


def _scan() -> None:
    """Records every live ``FlatParamHandle``'s layout (one pass over the live objects)."""
    try:
        from torch.distributed.fsdp._flat_param import FlatParamHandle
    except ImportError:  # a torch without FSDP: nothing can be flattened
        return
    table = _layout_table()
    for obj in gc.get_objects():
        # (type(), not isinstance: some module proxies warn when their __class__ is read)
        if issubclass(type(obj), FlatParamHandle):
            try:
                _record(obj, table)
            except (AttributeError, TypeError):  # a handle not yet (or no longer) set up
                continue


def flat_shard(param: Tensor) -> Optional[FlatShard]:
    """The :class:`FlatShard` of a parameter FSDP1 flattened; None for any other tensor (and for
    one FSDP left whole, ``NO_SHARD`` with ``use_orig_params=True``).

    Raises:
        RuntimeError: a flattened parameter whose layout cannot be found.
    """
    if not fsdp_flattened(param):
        return None
    table = _layout_table()
    with _lock:
        layout = table.get(param)
        if layout is None:
            _scan()
            layout = table.get(param)
    if layout is None:
        raise RuntimeError(
            'Gradient Centralization: a parameter of shape '
            f'{tuple(param.shape)} was flattened by FSDP (FullyShardedDataParallel), but its '
            "FlatParamHandle could not be found, so its rows cannot be told apart. Refusing to "
            'step without GC. Use FSDP2 (torch.distributed.fsdp.fully_shard, Shard(0)) or '
            'ZeroRedundancyOptimizer, or report this with your torch version.')
    if layout is _WHOLE:
        return None
    if sum(s.numel for s in layout.segments) > param.numel():
        raise RuntimeError(
            f'Gradient Centralization: an FSDP flat shard of {param.numel()} values claims '
            f'{sum(s.numel for s in layout.segments)}: its layout changed since it was read')
    return layout


def row_sums_(out: Tensor, values: Tensor, start: int, row: int, alpha: float = 1.0) -> None:
    """Adds to ``out[r]`` ``alpha`` times the sum of the values of row ``r`` that the 1-D
    ``values`` hold, where ``values[0]`` is entry ``start`` of a row-major flattening with rows
    of ``row`` values. Sums are taken in the values' dtype (float32 for fp16 / bf16: as the
    means of :func:`mmgc.gc.centralize_`), then added to ``out`` (float64)."""
    n = values.numel()
    if n == 0:
        return
    dtype = torch.float32 if values.dtype in (torch.float16, torch.bfloat16) else None
    r = start // row
    head = min(n, (-start) % row)  # values before the first row boundary
    if head:
        out[r:r + 1].add_(values[:head].sum(dtype=dtype), alpha=alpha)
        r += 1
    full = (n - head) // row
    if full:
        out[r:r + full].add_(values[head:head + full * row].view(full, row).sum(1, dtype=dtype),
                             alpha=alpha)
        r += full
    tail = n - head - full * row
    if tail:
        out[r:r + 1].add_(values[n - tail:].sum(dtype=dtype), alpha=alpha)


def subtract_row_means_(values: Tensor, means: Tensor, start: int, row: int) -> None:
    """``values[k] -= means[row of values[k]]``, positions as in :func:`row_sums_`."""
    n = values.numel()
    if n == 0:
        return
    means = means.to(values.dtype)
    r = start // row
    head = min(n, (-start) % row)
    if head:
        values[:head].sub_(means[r])
        r += 1
    full = (n - head) // row
    if full:
        values[head:head + full * row].view(full, row).sub_(means[r:r + full, None])
        r += full
    tail = n - head - full * row
    if tail:
        values[n - tail:].sub_(means[r])


def _weights(jobs: Sequence[FlatJob]) -> List[Tuple[FlatJob, Segment]]:
    """The (job, segment) pairs GC centralizes, in an order every rank shares."""
    from mmgc.gc import shape_applies  # (mmgc.gc imports mmgc.ops, which imports this module)
    return [(job, segment) for job in jobs for segment in job.shard.segments
            if shape_applies(segment.shape, job.conv_only)]


def _local_sums(pairs: List[Tuple[FlatJob, Segment]], device: torch.device,
                use_param: bool = False) -> Tensor:
    """This rank's row sums of every weight (zeros where it holds none), end to end: the
    tensor's, plus ``decay`` times the param's (or the param's alone with ``use_param``)."""
    sizes = [segment.shape[0] for _, segment in pairs]
    sums = torch.zeros(sum(sizes), dtype=torch.float64, device=device)
    at = 0
    for (job, segment), size in zip(pairs, sizes):
        row = math.prod(segment.shape[1:])
        out = sums[at:at + size]
        at += size
        if segment.numel == 0:
            continue
        window = slice(segment.offset, segment.offset + segment.numel)
        if use_param:
            row_sums_(out, job.param.detach().view(-1)[window], segment.start, row)
            continue
        if job.tensor is None:
            continue
        row_sums_(out, job.tensor.view(-1)[window], segment.start, row)
        if job.decay != 0:
            row_sums_(out, job.param.detach().view(-1)[window], segment.start, row, job.decay)
    return sums


def reduced_row_sums(sums: Tensor, group: Any) -> Tensor:
    """``sums`` added up over ``group`` (in place; nothing to do without a group). A backend
    that cannot reduce CPU tensors (nccl, with FSDP's CPU offload) gets a CUDA copy."""
    if group is None:
        return sums
    import torch.distributed as dist
    if sums.device.type == 'cpu' and 'nccl' in str(dist.get_backend(group)).lower():
        on_device = sums.to(torch.device('cuda', torch.cuda.current_device()))
        dist.all_reduce(on_device, group=group)
        return sums.copy_(on_device)
    dist.all_reduce(sums, group=group)
    return sums


def _by_group(jobs: Sequence[FlatJob]) -> Dict[Any, List[FlatJob]]:
    groups: Dict[Any, List[FlatJob]] = {}
    for job in jobs:
        groups.setdefault(job.shard.group, []).append(job)
    return groups


def _device(jobs: Sequence[FlatJob]) -> torch.device:
    return jobs[0].param.device


@torch.no_grad()
def centralize_flat_(jobs: Sequence[FlatJob]) -> None:
    """Centralizes the tensors of ``jobs`` exactly, whatever part of each weight this rank holds:
    ``t -= mean(row of t + decay * param)`` over the whole row, across ranks. One all-reduce of
    the row sums per process group. Every rank must call it with the same jobs (tensors may
    differ, or be None)."""
    for group, members in _by_group(jobs).items():
        pairs = _weights(members)
        if not pairs:
            continue
        sums = reduced_row_sums(_local_sums(pairs, _device(members)), group)
        _subtract(pairs, sums, use_param=False)


def _subtract(pairs: List[Tuple[FlatJob, Segment]], sums: Tensor, use_param: bool) -> None:
    at = 0
    for job, segment in pairs:
        size, row = segment.shape[0], math.prod(segment.shape[1:])
        means = sums[at:at + size] / row
        at += size
        target = job.param.detach() if use_param else job.tensor
        if segment.numel == 0 or target is None:
            continue
        values = target.view(-1)[segment.offset:segment.offset + segment.numel]
        subtract_row_means_(values, means, segment.start, row)


class FlatUpdate:
    """GC on the update of FSDP flat shards: :meth:`before` records this rank's row sums of the
    weights, :meth:`after` (once the step ran) removes the change of every row's mean, with one
    all-reduce per process group."""

    def __init__(self, jobs: Sequence[FlatJob]) -> None:
        self._parts = []
        with torch.no_grad():
            for group, members in _by_group(jobs).items():
                pairs = _weights(members)
                if pairs:
                    self._parts.append(
                        (group, pairs, _local_sums(pairs, _device(members), use_param=True)))

    @torch.no_grad()
    def after(self) -> None:
        for group, pairs, before in self._parts:
            now = _local_sums(pairs, before.device, use_param=True)
            shift = reduced_row_sums(now.sub_(before), group)
            _subtract(pairs, shift, use_param=True)
