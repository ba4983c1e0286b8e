"""Triton kernels for GPU tensors: the GC operator and fused GC + SGD(W) / Adam(W) steps, each a
single launch over a whole list of tensors (one launch per dtype).

The same math as the CPU kernels (``csrc/gc_*_cpu.cpp``), tested against the float64 reference
and the plain path on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``, see
``tests/test_ops/test_triton_kernels.py``), and on CUDA tensors by
``tools/analysis_tools/gpu_check.sh``.

Layout of a launch: one int64 table holds a header of float64 hyperparameters (their bits), the
first program of each tensor, and per tensor its size, its row length and row count, flags, and
the addresses of its parameter, gradient and states. Each program finds its tensor by counting
the first programs at or below its own (one vector load) and takes a block of whole rows (a row
is a dim-0 slice when GC centralizes the tensor, else a chunk of up to ``CHUNK`` values):

- rows of up to 64 values: 64 rows per program; up to 256: 16 rows; up to 1024: 4 rows; up to
  ``CHUNK`` (4096): one row. Each value is read from memory once and written once (the row stays
  in registers between its mean and its step).
- longer rows (fc6 of Faster R-CNN: 12544): one row per program in chunks of ``CHUNK``: a first
  pass sums the row, a second takes the step, so the gradient (and, with L2 decay, the weight) is
  read twice; the second read mostly hits the L2 cache.

Arithmetic runs in float32 (float64 for float64 tensors); fp16 / bf16 values are rounded once,
when stored. Every result depends only on the row, never on the grid: a tensor stepped alone or
among others, in any order, gets the same bits.
"""
import struct
from array import array
import weakref
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.nn import Parameter

__all__ = ['CHUNK', 'gc_adam_', 'gc_centralize_', 'gc_sgd_', 'supported']

CHUNK = 4096
# Rows per program for rows of up to 64, 256 and 1024 values (longer rows: one a program).
_PACKED = ((64, 64), (256, 16), (1024, 4))
_HEADER = 16       # float64 hyperparameters, then the first-program column, then the rows
_WIDTH = 10        # int64 values per tensor
_MAX_TENSORS = 4096
# The columns of a tensor's row in the table.
_START, _NUMEL, _ROW_LEN, _ROWS, _FLAGS, _W, _G, _S1, _S2, _STEP = range(_WIDTH)
_CENTRALIZE, _FIRST = 1, 2

_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_PLAIN = (Tensor, Parameter)


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------
@triton.jit
def _acc(x, F64: tl.constexpr):
    if F64:
        return x.to(tl.float64)
    else:
        return x.to(tl.float32)


@triton.jit
def _find(table, n_tensors, pid, HEADER: tl.constexpr, TENSORS: tl.constexpr):
    """Index of the last tensor whose first program is <= pid (the first-program column is
    stored apart, as one vector: one load and a count, not a chain of dependent loads)."""
    index = tl.arange(0, TENSORS)
    starts = tl.load(table + HEADER + index, mask=index < n_tensors, other=1 << 62)
    return tl.sum((starts <= pid).to(tl.int32), axis=0) - 1


@triton.jit
def _pointer(table, column, proto):
    """The address in a table cell as a pointer of ``proto``'s type."""
    return tl.load(table + column).to(proto.dtype, bitcast=True)


@triton.jit
def _tile(first_row, c0, n_rows, row_len, numel, R: tl.constexpr, C: tl.constexpr):
    """Offsets and mask of rows ``first_row .. + R`` x columns ``c0 .. + C``."""
    rows = first_row + tl.arange(0, R)
    cols = c0 + tl.arange(0, C)
    offsets = rows.to(tl.int64)[:, None] * row_len + cols[None, :]
    mask = (rows < n_rows)[:, None] & (cols < row_len)[None, :] & (offsets < numel)
    return offsets, mask


@triton.jit
def _centralize_rows(t_ptr, p_ptr, decay, first_row, n_rows, row_len, numel,
                     R: tl.constexpr, C: tl.constexpr, LOOP: tl.constexpr,
                     DECAY: tl.constexpr, F64: tl.constexpr):
    if LOOP:
        mean = _direction_means(t_ptr, p_ptr, first_row, n_rows, row_len, numel, 1.0, decay, R,
                                C, DECAY, F64)
        tl.debug_barrier()
        for c0 in range(0, row_len, C):
            offsets, mask = _tile(first_row, c0, n_rows, row_len, numel, R, C)
            x = _acc(tl.load(t_ptr + offsets, mask=mask, other=0.0), F64)
            tl.store(t_ptr + offsets, (x - mean[:, None]).to(t_ptr.dtype.element_ty), mask=mask)
    else:
        offsets, mask = _tile(first_row, 0, n_rows, row_len, numel, R, C)
        x = _acc(tl.load(t_ptr + offsets, mask=mask, other=0.0), F64)
        s = x
        if DECAY:
            s = x + decay * _acc(tl.load(p_ptr + offsets, mask=mask, other=0.0), F64)
        mean = tl.sum(s, axis=1) / row_len
        tl.store(t_ptr + offsets, (x - mean[:, None]).to(t_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _centralize_kernel(table, hyper, n_tensors, proto, DECAY: tl.constexpr, F64: tl.constexpr,
                       CHUNK: tl.constexpr, HEADER: tl.constexpr, WIDTH: tl.constexpr,
                       TENSORS: tl.constexpr):
    pid = tl.program_id(0)
    index = _find(table, n_tensors, pid, HEADER, TENSORS)
    row = table + HEADER + n_tensors + index * WIDTH
    program = pid - tl.load(table + HEADER + index)
    numel = tl.load(row + 1)
    row_len = tl.load(row + 2)
    n_rows = tl.load(row + 3)
    t_ptr = _pointer(row, 5, proto)
    p_ptr = _pointer(row, 6, proto)
    decay = _acc(tl.load(hyper + 0), F64)
    if row_len <= 64:
        _centralize_rows(t_ptr, p_ptr, decay, program * 64, n_rows, row_len, numel, 64, 64,
                         False, DECAY, F64)
    elif row_len <= 256:
        _centralize_rows(t_ptr, p_ptr, decay, program * 16, n_rows, row_len, numel, 16, 256,
                         False, DECAY, F64)
    elif row_len <= 1024:
        _centralize_rows(t_ptr, p_ptr, decay, program * 4, n_rows, row_len, numel, 4, 1024,
                         False, DECAY, F64)
    elif row_len <= CHUNK:
        _centralize_rows(t_ptr, p_ptr, decay, program, n_rows, row_len, numel, 1, CHUNK,
                         False, DECAY, F64)
    else:
        _centralize_rows(t_ptr, p_ptr, decay, program, n_rows, row_len, numel, 1, CHUNK,
                         True, DECAY, F64)


@triton.jit
def _sgd_direction(g, w, sign, wd, DECAY: tl.constexpr):
    if DECAY:
        return sign * g + wd * w
    else:
        return sign * g


@triton.jit
def _direction_means(g_ptr, w_ptr, first_row, n_rows, row_len, numel, sign, wd,
                     R: tl.constexpr, C: tl.constexpr, DECAY: tl.constexpr, F64: tl.constexpr):
    """Means of ``sign * g + wd * w`` over rows longer than a chunk, summed chunk by chunk (the
    first of two passes)."""
    total = _acc(tl.zeros([R], tl.float32), F64)
    for c0 in range(0, row_len, C):
        offsets, mask = _tile(first_row, c0, n_rows, row_len, numel, R, C)
        g = _acc(tl.load(g_ptr + offsets, mask=mask, other=0.0), F64)
        w = g
        if DECAY:
            w = _acc(tl.load(w_ptr + offsets, mask=mask, other=0.0), F64)
        total += tl.sum(_sgd_direction(g, w, sign, wd, DECAY), axis=1)
    return total / row_len


@triton.jit
def _sgd_values(w_ptr, b_ptr, offsets, mask, w, d, first, mom, keep, shrink, lr,
                MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr):
    """Momentum, nesterov and the weight update of a tile whose direction ``d`` is final."""
    update = d
    if MOMENTUM:
        old = tl.load(b_ptr + offsets, mask=mask & (first == 0), other=0.0).to(d.dtype)
        buf = tl.where(first != 0, d, mom * old + keep * d)
        tl.store(b_ptr + offsets, buf.to(b_ptr.dtype.element_ty), mask=mask)
        if NESTEROV:
            update = d + mom * buf
        else:
            update = buf
    tl.store(w_ptr + offsets, (w * shrink - lr * update).to(w_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _sgd_rows(w_ptr, g_ptr, b_ptr, first_row, n_rows, row_len, numel, centralize, first,
              sign, wd, shrink, mom, keep, lr, R: tl.constexpr, C: tl.constexpr,
              LOOP: tl.constexpr, DECAY: tl.constexpr, MOMENTUM: tl.constexpr,
              NESTEROV: tl.constexpr, F64: tl.constexpr):
    if LOOP:  # (centralized rows only)
        mean = _direction_means(g_ptr, w_ptr, first_row, n_rows, row_len, numel, sign, wd, R, C,
                                DECAY, F64)
        for c0 in range(0, row_len, C):
            offsets, mask = _tile(first_row, c0, n_rows, row_len, numel, R, C)
            g = _acc(tl.load(g_ptr + offsets, mask=mask, other=0.0), F64)
            w = _acc(tl.load(w_ptr + offsets, mask=mask, other=0.0), F64)
            d = _sgd_direction(g, w, sign, wd, DECAY) - mean[:, None]
            _sgd_values(w_ptr, b_ptr, offsets, mask, w, d, first, mom, keep, shrink, lr,
                        MOMENTUM, NESTEROV)
    else:
        offsets, mask = _tile(first_row, 0, n_rows, row_len, numel, R, C)
        g = _acc(tl.load(g_ptr + offsets, mask=mask, other=0.0), F64)
        w = _acc(tl.load(w_ptr + offsets, mask=mask, other=0.0), F64)
        d = _sgd_direction(g, w, sign, wd, DECAY)
        mean = tl.where(centralize != 0, tl.sum(d, axis=1) / row_len, 0.0)
        d = d - mean[:, None]
        _sgd_values(w_ptr, b_ptr, offsets, mask, w, d, first, mom, keep, shrink, lr, MOMENTUM,
                    NESTEROV)


@triton.jit
def _sgd_kernel(table, hyper, n_tensors, proto, DECAY: tl.constexpr, MOMENTUM: tl.constexpr,
                NESTEROV: tl.constexpr, F64: tl.constexpr, CHUNK: tl.constexpr,
                HEADER: tl.constexpr, WIDTH: tl.constexpr, TENSORS: tl.constexpr):
    pid = tl.program_id(0)
    index = _find(table, n_tensors, pid, HEADER, TENSORS)
    row = table + HEADER + n_tensors + index * WIDTH
    program = pid - tl.load(table + HEADER + index)
    numel = tl.load(row + 1)
    row_len = tl.load(row + 2)
    n_rows = tl.load(row + 3)
    flags = tl.load(row + 4)
    centralize = flags & 1
    first = flags & 2
    w_ptr = _pointer(row, 5, proto)
    g_ptr = _pointer(row, 6, proto)
    b_ptr = _pointer(row, 7, proto)
    sign = _acc(tl.load(hyper + 0), F64)
    wd = _acc(tl.load(hyper + 1), F64)
    shrink = _acc(tl.load(hyper + 2), F64)
    mom = _acc(tl.load(hyper + 3), F64)
    keep = _acc(tl.load(hyper + 4), F64)
    lr = _acc(tl.load(hyper + 5), F64)
    if row_len <= 64:
        _sgd_rows(w_ptr, g_ptr, b_ptr, program * 64, n_rows, row_len, numel, centralize, first,
                  sign, wd, shrink, mom, keep, lr, 64, 64, False, DECAY, MOMENTUM, NESTEROV, F64)
    elif row_len <= 256:
        _sgd_rows(w_ptr, g_ptr, b_ptr, program * 16, n_rows, row_len, numel, centralize, first,
                  sign, wd, shrink, mom, keep, lr, 16, 256, False, DECAY, MOMENTUM, NESTEROV,
                  F64)
    elif row_len <= 1024:
        _sgd_rows(w_ptr, g_ptr, b_ptr, program * 4, n_rows, row_len, numel, centralize, first,
                  sign, wd, shrink, mom, keep, lr, 4, 1024, False, DECAY, MOMENTUM, NESTEROV,
                  F64)
    elif row_len <= CHUNK:
        _sgd_rows(w_ptr, g_ptr, b_ptr, program, n_rows, row_len, numel, centralize, first,
                  sign, wd, shrink, mom, keep, lr, 1, CHUNK, False, DECAY, MOMENTUM, NESTEROV,
                  F64)
    else:
        _sgd_rows(w_ptr, g_ptr, b_ptr, program, n_rows, row_len, numel, centralize, first,
                  sign, wd, shrink, mom, keep, lr, 1, CHUNK, True, DECAY, MOMENTUM, NESTEROV,
                  F64)


@triton.jit
def _adam_values(w_ptr, m_ptr, v_ptr, offsets, mask, w, d, lerp, beta2, rest2, eps, shrink,
                 step_size, bc2_sqrt):
    """Moments and the new weight (not stored) of a tile whose direction ``d`` is final."""
    avg = tl.load(m_ptr + offsets, mask=mask, other=0.0).to(d.dtype)
    avg_sq = tl.load(v_ptr + offsets, mask=mask, other=0.0).to(d.dtype)
    avg = avg + lerp * (d - avg)
    avg_sq = beta2 * avg_sq + rest2 * d * d
    tl.store(m_ptr + offsets, avg.to(m_ptr.dtype.element_ty), mask=mask)
    tl.store(v_ptr + offsets, avg_sq.to(v_ptr.dtype.element_ty), mask=mask)
    return w * shrink - step_size * avg / (tl.sqrt(avg_sq) / bc2_sqrt + eps)


@triton.jit
def _adam_rows(w_ptr, g_ptr, m_ptr, v_ptr, first_row, n_rows, row_len, numel, centralize,
               sign, wd, shrink, lerp, beta2, rest2, eps, step_size, bc2_sqrt,
               R: tl.constexpr, C: tl.constexpr, LOOP: tl.constexpr, DECAY: tl.constexpr,
               UPDATE: tl.constexpr, F64: tl.constexpr):
    if LOOP:  # (centralized rows only)
        if UPDATE:  # the step, summing the change; then the mean change taken back out
            total = _acc(tl.zeros([R], tl.float32), F64)
            for c0 in range(0, row_len, C):
                offsets, mask = _tile(first_row, c0, n_rows, row_len, numel, R, C)
                g = _acc(tl.load(g_ptr + offsets, mask=mask, other=0.0), F64)
                w = _acc(tl.load(w_ptr + offsets, mask=mask, other=0.0), F64)
                fresh = _adam_values(w_ptr, m_ptr, v_ptr, offsets, mask, w,
                                     _sgd_direction(g, w, sign, wd, DECAY), lerp, beta2, rest2,
                                     eps, shrink, step_size, bc2_sqrt)
                tl.store(w_ptr + offsets, fresh.to(w_ptr.dtype.element_ty), mask=mask)
                total += tl.sum(tl.where(mask, w - fresh, 0.0), axis=1)
            mean = total / row_len
            tl.debug_barrier()
            for c0 in range(0, row_len, C):
                offsets, mask = _tile(first_row, c0, n_rows, row_len, numel, R, C)
                w = _acc(tl.load(w_ptr + offsets, mask=mask, other=0.0), F64)
                tl.store(w_ptr + offsets, (w + mean[:, None]).to(w_ptr.dtype.element_ty),
                         mask=mask)
        else:  # the row's mean direction first, then the step
            mean = _direction_means(g_ptr, w_ptr, first_row, n_rows, row_len, numel, sign, wd, R,
                                    C, DECAY, F64)
            for c0 in range(0, row_len, C):
                offsets, mask = _tile(first_row, c0, n_rows, row_len, numel, R, C)
                g = _acc(tl.load(g_ptr + offsets, mask=mask, other=0.0), F64)
                w = _acc(tl.load(w_ptr + offsets, mask=mask, other=0.0), F64)
                d = _sgd_direction(g, w, sign, wd, DECAY) - mean[:, None]
                fresh = _adam_values(w_ptr, m_ptr, v_ptr, offsets, mask, w, d, lerp, beta2,
                                     rest2, eps, shrink, step_size, bc2_sqrt)
                tl.store(w_ptr + offsets, fresh.to(w_ptr.dtype.element_ty), mask=mask)
    else:
        offsets, mask = _tile(first_row, 0, n_rows, row_len, numel, R, C)
        g = _acc(tl.load(g_ptr + offsets, mask=mask, other=0.0), F64)
        w = _acc(tl.load(w_ptr + offsets, mask=mask, other=0.0), F64)
        d = _sgd_direction(g, w, sign, wd, DECAY)
        if not UPDATE:
            d = d - tl.where(centralize != 0, tl.sum(d, axis=1) / row_len, 0.0)[:, None]
        fresh = _adam_values(w_ptr, m_ptr, v_ptr, offsets, mask, w, d, lerp, beta2, rest2, eps,
                             shrink, step_size, bc2_sqrt)
        if UPDATE:
            change = tl.sum(tl.where(mask, w - fresh, 0.0), axis=1) / row_len
            fresh += tl.where(centralize != 0, change, 0.0)[:, None]
        tl.store(w_ptr + offsets, fresh.to(w_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _power(base, exponent):
    """``base ** exponent`` for a whole exponent in [0, 2**32), by squaring (multiplications
    only: float64 transcendentals are not on every Triton backend)."""
    result = base * 0.0 + 1.0
    n = exponent
    for _ in range(32):
        result = tl.where((n & 1) != 0, result * base, result)
        base = base * base
        n = n >> 1
    return result


@triton.jit
def _adam_kernel(table, hyper, n_tensors, proto, step_proto, DECAY: tl.constexpr,
                 UPDATE: tl.constexpr, STEP_IN_TABLE: tl.constexpr, F64: tl.constexpr,
                 CHUNK: tl.constexpr, HEADER: tl.constexpr, WIDTH: tl.constexpr,
                 TENSORS: tl.constexpr):
    pid = tl.program_id(0)
    index = _find(table, n_tensors, pid, HEADER, TENSORS)
    row = table + HEADER + n_tensors + index * WIDTH
    program = pid - tl.load(table + HEADER + index)
    numel = tl.load(row + 1)
    row_len = tl.load(row + 2)
    n_rows = tl.load(row + 3)
    centralize = tl.load(row + 4) & 1
    w_ptr = _pointer(row, 5, proto)
    g_ptr = _pointer(row, 6, proto)
    m_ptr = _pointer(row, 7, proto)
    v_ptr = _pointer(row, 8, proto)
    if STEP_IN_TABLE:  # the step count itself
        step = tl.load(row + 9)
    else:
        step = tl.load(_pointer(row, 9, step_proto)).to(tl.int64)
    sign = _acc(tl.load(hyper + 0), F64)
    wd = _acc(tl.load(hyper + 1), F64)
    shrink = _acc(tl.load(hyper + 2), F64)
    lerp = _acc(tl.load(hyper + 3), F64)
    beta2 = _acc(tl.load(hyper + 4), F64)
    rest2 = _acc(tl.load(hyper + 5), F64)
    eps = _acc(tl.load(hyper + 6), F64)
    lr = tl.load(hyper + 7)
    # 1 - beta ** step, as torch, in float64
    bc1 = 1.0 - _power(tl.load(hyper + 8), step)
    bc2 = 1.0 - _power(tl.load(hyper + 9), step)
    step_size = _acc(lr / bc1, F64)
    bc2_sqrt = _acc(tl.sqrt(bc2), F64)
    if row_len <= 64:
        _adam_rows(w_ptr, g_ptr, m_ptr, v_ptr, program * 64, n_rows, row_len, numel, centralize,
                   sign, wd, shrink, lerp, beta2, rest2, eps, step_size, bc2_sqrt, 64, 64, False,
                   DECAY, UPDATE, F64)
    elif row_len <= 256:
        _adam_rows(w_ptr, g_ptr, m_ptr, v_ptr, program * 16, n_rows, row_len, numel, centralize,
                   sign, wd, shrink, lerp, beta2, rest2, eps, step_size, bc2_sqrt, 16, 256,
                   False, DECAY, UPDATE, F64)
    elif row_len <= 1024:
        _adam_rows(w_ptr, g_ptr, m_ptr, v_ptr, program * 4, n_rows, row_len, numel, centralize,
                   sign, wd, shrink, lerp, beta2, rest2, eps, step_size, bc2_sqrt, 4, 1024,
                   False, DECAY, UPDATE, F64)
    elif row_len <= CHUNK:
        _adam_rows(w_ptr, g_ptr, m_ptr, v_ptr, program, n_rows, row_len, numel, centralize,
                   sign, wd, shrink, lerp, beta2, rest2, eps, step_size, bc2_sqrt, 1, CHUNK,
                   False, DECAY, UPDATE, F64)
    else:
        _adam_rows(w_ptr, g_ptr, m_ptr, v_ptr, program, n_rows, row_len, numel, centralize,
                   sign, wd, shrink, lerp, beta2, rest2, eps, step_size, bc2_sqrt, 1, CHUNK,
                   True, DECAY, UPDATE, F64)


# --------------------------------------------------------------------------------------------
# Launchers: the same signatures as the CPU kernels' (mmgc/ops/csrc/gc_cpu.h)
# --------------------------------------------------------------------------------------------
def supported(tensor: Tensor) -> bool:
    """Whether a tensor's memory can be read and written by the kernels through its address:
    exactly a ``torch.Tensor`` / ``nn.Parameter`` (no subclass), strided, of a supported dtype,
    dense (:func:`_dense`), with no lazy negation, and not an inference tensor."""
    return (type(tensor) in _PLAIN and tensor.layout is torch.strided
            and tensor.dtype in _DTYPES and _dense(tensor) and not tensor.is_neg()
            and not tensor.is_inference())


def _dense(tensor: Tensor) -> bool:
    """Contiguous in torch's default or a channels-last order: no gaps, no overlaps."""
    if tensor.is_contiguous():
        return True
    if tensor.dim() == 4:
        return tensor.is_contiguous(memory_format=torch.channels_last)
    return tensor.dim() == 5 and tensor.is_contiguous(memory_format=torch.channels_last_3d)


def _like(tensor: Tensor, param: Tensor) -> bool:
    return (type(tensor) in _PLAIN and tensor.dtype is param.dtype
            and tensor.device == param.device and tensor.shape == param.shape
            and tensor.stride() == param.stride() and not tensor.is_neg()
            and not tensor.is_inference())


def _rows(param: Tensor, conv_only: bool, centralize: bool = True) -> Optional[Tuple[int, int,
                                                                                     bool]]:
    """``(row_len, n_rows, centralized)`` of a dense tensor, or None where a centralized
    tensor's dim-0 slices are not blocks of memory (dim 0 not outermost)."""
    numel = param.numel()
    if centralize and param.dim() >= (4 if conv_only else 2) and numel > param.shape[0]:
        row_len = numel // param.shape[0]
        if param.stride(0) != row_len:
            return None
        return row_len, param.shape[0], True
    row_len = min(numel, CHUNK)
    return row_len, -(-numel // row_len), False


def _programs(row_len: int, n_rows: int) -> int:
    """Programs a tensor takes (as the kernels' branches on the row length)."""
    for longest, per_program in _PACKED:
        if row_len <= longest:
            return -(-n_rows // per_program)
    return n_rows


def _disjoint(tensors: Sequence[Tensor]) -> bool:
    """Whether the memory of the tensors a launch writes is disjoint (programs of two tensors
    run at once: a tensor listed twice, or two views of one memory, would race)."""
    spans = sorted((t.data_ptr(), t.data_ptr() + t.numel() * t.element_size())
                   for t in tensors if t.numel())
    return all(spans[i][0] >= spans[i - 1][1] for i in range(1, len(spans)))


def _bits(values: Sequence[float]) -> List[int]:
    return list(struct.unpack(f'<{len(values)}q', struct.pack(f'<{len(values)}d', *values)))


def _launch(kernel, device: torch.device, header: Sequence[float], rows: List[List[int]],
            proto: Tensor, **constants) -> None:
    """Writes the table (the header, each tensor's first program, then a row per tensor) and
    launches one program per block of rows."""
    starts = []
    total = 0
    for row in rows:
        starts.append(total)
        row[_START] = total
        total += _programs(row[_ROW_LEN], row[_ROWS])
    values = array('q', _bits(list(header) + [0.0] * (_HEADER - len(header))))
    values.extend(starts)
    for row in rows:
        values.extend(row)
    table = torch.frombuffer(values, dtype=torch.int64)
    if device.type != 'cpu':
        table = table.pin_memory().to(device, non_blocking=True)
    kernel[(total, )](table, table.view(torch.float64), len(rows), proto,
                      F64=proto.dtype is torch.float64, CHUNK=CHUNK, HEADER=_HEADER,
                      WIDTH=_WIDTH, TENSORS=max(16, triton.next_power_of_2(len(rows))),
                      num_warps=8, **constants)


def _by_dtype(indices: Sequence[int], tensors: Sequence[Tensor]) -> Dict[torch.dtype, List[int]]:
    groups: Dict[torch.dtype, List[int]] = {}
    for i in indices:
        groups.setdefault(tensors[i].dtype, []).append(i)
    return groups


def _batches(indices: List[int]) -> List[List[int]]:
    return [indices[i:i + _MAX_TENSORS] for i in range(0, len(indices), _MAX_TENSORS)]


def _bump(tensors: Sequence[Tensor]) -> None:
    """Written through their addresses: tell autograd they changed, as an in-place op would."""
    torch.autograd.graph.increment_version(list(tensors))


def gc_centralize_(tensors: Sequence[Tensor], params: Sequence[Tensor], decay: float) -> bool:
    """``t[i] -= mean(t[i] + decay * p[i])`` for every dim-0 slice of every tensor (all of them
    centralized ones: the caller selects them), in one launch per dtype. Returns False, having
    changed nothing, when some tensor cannot take the kernel."""
    if not tensors:
        return False
    device = tensors[0].device
    rows: List[List[int]] = []
    for i, t in enumerate(tensors):
        if not supported(t) or t.device != device:
            return False
        p = params[i] if decay != 0 else t
        if decay != 0 and not _like(p, t):
            return False
        layout = _rows(t, False)
        if layout is None or not layout[2]:
            return False
        row_len, n_rows, _ = layout
        rows.append([0, t.numel(), row_len, n_rows, _CENTRALIZE, t.data_ptr(), p.data_ptr(), 0,
                     0, 0])
    if not _disjoint(tensors):
        return False
    for dtype, indices in _by_dtype(range(len(tensors)), tensors).items():
        for batch in _batches(indices):
            _launch(_centralize_kernel, device, [float(decay)], [rows[i] for i in batch],
                    tensors[batch[0]], DECAY=decay != 0)
    _bump(tensors)
    return True


# id(param) -> (weak reference, address, strides, dtype, conv_only, row layout): what the last
# step found about a param, reused while the same tensor keeps its memory, strides and dtype.
_PARAM_LAYOUTS: Dict[int, tuple] = {}
_MAX_CACHED = 1 << 16


def _param_layout(w: Tensor, device: torch.device, dtype: torch.dtype,
                  conv_only: bool) -> Optional[Tuple[int, int, int, Tuple[int, ...]]]:
    """``(numel, row_len, n_rows, flags)`` and the strides of a param the kernels can take, or
    None. Every step pays a few attribute reads per param; the full check runs when a param is
    new to the kernels or its memory, strides or dtype changed."""
    key = id(w)
    address = w.data_ptr()
    strides = w.stride()
    entry = _PARAM_LAYOUTS.get(key)
    if (entry is not None and entry[0]() is w and entry[1] == address and entry[2] == strides
            and entry[3] is dtype and entry[4] == conv_only and not w.is_neg()):
        return entry[5]
    if not supported(w) or w.device != device or w.dtype is not dtype:
        return None
    layout = _rows(w, conv_only)
    if layout is None:
        return None
    row_len, n_rows, centralize = layout
    result = (w.numel(), row_len, n_rows, _CENTRALIZE if centralize else 0, w.shape)
    if len(_PARAM_LAYOUTS) >= _MAX_CACHED:
        _PARAM_LAYOUTS.clear()
    _PARAM_LAYOUTS[key] = (weakref.ref(w), address, strides, dtype, conv_only, result)
    return result


def _laid_out_as(t: Tensor, dtype: torch.dtype, shape: torch.Size, strides: Tuple[int, ...],
                 device_index: int) -> bool:
    """Whether a gradient or a state has its param's dtype, device, shape and strides, and is
    memory the kernels may use (no subclass, no lazy negation, not an inference tensor)."""
    return (type(t) in _PLAIN and t.dtype is dtype and t.get_device() == device_index
            and t.stride() == strides and t.shape == shape and not t.is_neg()
            and not t.is_inference())


# The addresses of the last group whose written tensors were found disjoint.
_DISJOINT: Dict[str, tuple] = {}


def _group_rows(params: Sequence[Tensor], grads: Sequence[Tensor],
                states: Sequence[Sequence[Optional[Tensor]]],
                conv_only: bool) -> Optional[List[List[int]]]:
    """A table row per param (its first program still 0), or None when some tensor cannot take
    the kernels: not :func:`supported`, on another device or of another dtype, a gradient or a
    state laid out unlike its param, a centralized param whose dim 0 is not outermost, or
    tensors written by the step that share memory. States may be None (a momentum buffer
    before the first step)."""
    if not params or len(grads) != len(params):
        return None
    first = params[0]
    if type(first) not in _PLAIN or first.layout is not torch.strided:
        return None
    device, dtype = first.device, first.dtype
    device_index = first.get_device()
    rows = []
    written = []
    for i, w in enumerate(params):
        layout = _param_layout(w, device, dtype, conv_only)
        if layout is None:
            return None
        numel, row_len, n_rows, flags, shape = layout
        strides = w.stride()
        g = grads[i]
        if not _laid_out_as(g, dtype, shape, strides, device_index):
            return None
        address = w.data_ptr()
        written.append(address)
        row = [0, numel, row_len, n_rows, flags, address, g.data_ptr(), 0, 0, 0]
        for k, column in enumerate(states):
            s = column[i]
            if s is None:
                continue
            if not _laid_out_as(s, dtype, shape, strides, device_index):
                return None
            row[_S1 + k] = s.data_ptr()
            written.append(row[_S1 + k])
        rows.append(row)
    key = (tuple(written), tuple(row[_NUMEL] for row in rows), dtype)
    if _DISJOINT.get('last') != key:
        tensors = list(params) + [s for column in states for s in column if s is not None]
        if not _disjoint(tensors):
            return None
        _DISJOINT['last'] = key
    return rows


def gc_sgd_(params: Sequence[Tensor], grads: Sequence[Tensor], bufs: Sequence[Optional[Tensor]],
            conv_only: bool, weight_decay: float, decoupled_weight_decay: float, momentum: float,
            dampening: float, lr: float, nesterov: bool,
            maximize: bool) -> Tuple[bool, List[Tensor]]:
    """One SGD(W) step of a param group on ``Phi(s * g + weight_decay * w)`` (see
    ``csrc/gc_sgd_cpu.cpp`` for the math). Returns whether it was taken (False: nothing
    changed) and the momentum buffers (new ones where a param had none: torch's first step)."""
    use_momentum = momentum != 0
    if use_momentum and len(bufs) != len(params):
        return False, []
    rows = _group_rows(params, grads, [list(bufs)] if use_momentum else [], conv_only)
    if rows is None:
        return False, []
    out: List[Tensor] = []
    if use_momentum:
        for row, w, buf in zip(rows, params, bufs):
            if buf is None:
                buf = torch.empty_like(w, memory_format=torch.preserve_format)
                row[_FLAGS] |= _FIRST
                row[_S1] = buf.data_ptr()
            out.append(buf)
    header = [-1.0 if maximize else 1.0, float(weight_decay),
              1.0 - float(lr) * float(decoupled_weight_decay), float(momentum),
              1.0 - float(dampening), float(lr)]
    live = [i for i, w in enumerate(params) if w.numel()]
    for batch in _batches(live):
        _launch(_sgd_kernel, params[0].device, header, [rows[i] for i in batch], params[0],
                DECAY=weight_decay != 0, MOMENTUM=use_momentum,
                NESTEROV=bool(nesterov) and use_momentum)
    _bump(list(params) + out)
    return True, out


def gc_adam_(params: Sequence[Tensor], grads: Sequence[Tensor], exp_avgs: Sequence[Tensor],
             exp_avg_sqs: Sequence[Tensor], steps: Sequence[Tensor], conv_only: bool, lr: float,
             beta1: float, beta2: float, eps: float, weight_decay: float, decoupled: bool,
             maximize: bool, centralize_update: bool, *,
             steps_in_table: Optional[bool] = None) -> bool:
    """One Adam(W) step of a param group (see ``csrc/gc_adam_cpu.cpp`` for the math); ``steps``
    are torch's step-count tensors, counted up here. Step counts on the params' device are read
    by the kernel; others (torch keeps them on the CPU unless ``fused`` or ``capturable``) are
    counted on the host and written into the table. Returns False, having changed nothing,
    when the group cannot take the kernel. ``steps_in_table`` forces either way (for tests)."""
    if len(steps) != len(params) or not steps:
        return False
    rows = _group_rows(params, grads, [list(exp_avgs), list(exp_avg_sqs)], conv_only)
    if rows is None or any(row[_S1] == 0 or row[_S2] == 0 for row in rows):
        return False
    device = params[0].device
    step_dtype = steps[0].dtype
    step_device = steps[0].device
    for s in steps:
        if (type(s) not in _PLAIN or s.numel() != 1 or s.requires_grad or s.dtype is not step_dtype
                or s.dtype not in (torch.float32, torch.float64) or s.device != step_device
                or s.is_inference()):
            return False
    in_table = step_device != device if steps_in_table is None else steps_in_table
    if in_table and step_device.type != 'cpu':
        return False
    torch._foreach_add_(list(steps), 1.0)
    if in_table:
        for row, count in zip(rows, torch.stack(list(steps)).tolist()):
            row[_STEP] = int(count)
    else:
        for row, s in zip(rows, steps):
            row[_STEP] = s.data_ptr()
    l2 = 0.0 if decoupled else float(weight_decay)
    header = [-1.0 if maximize else 1.0, l2,
              1.0 - float(lr) * float(weight_decay) if decoupled else 1.0, 1.0 - float(beta1),
              float(beta2), 1.0 - float(beta2), float(eps), float(lr), float(beta1),
              float(beta2)]
    live = [i for i, w in enumerate(params) if w.numel()]
    try:
        for batch in _batches(live):
            _launch(_adam_kernel, device, header, [rows[i] for i in batch], params[0],
                    step_proto=steps[0], DECAY=l2 != 0, UPDATE=bool(centralize_update),
                    STEP_IN_TABLE=in_table)
    except Exception:  # not compiled or not launched: the plain path counts the step again
        torch._foreach_sub_(list(steps), 1.0)
        raise
    _bump(list(params) + list(exp_avgs) + list(exp_avg_sqs))
    return True


# Whether Triton's interpreter runs the kernels (TRITON_INTERPRET=1 when this module was loaded).
INTERPRETED = type(_sgd_kernel).__name__ == 'InterpretedFunction'
