"""Triton kernels for GPU tensors: the GC operator and fused GC + SGD(W) / Adam(W) steps, each a
single launch over a whole list of tensors (one launch per dtype).

The same math as the CPU kernels (``csrc/gc_*_cpu.cpp``), tested against the float64 reference
and the plain path on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``, see
``tests/test_ops/test_triton_kernels.py``), compiled for sm_90 without a GPU
(``tests/test_ops/test_triton_compile.py``), and run on CUDA tensors by
``tools/analysis_tools/gpu_check.sh``. The launch table is checked and written by
``csrc/gc_triton_table.cpp`` (:func:`_python_table` where that cannot be built).

Layout of a launch: one int64 table holds a header of float64 hyperparameters (their bits), the
first program of each tensor, and per tensor its size, its row length and row count, flags, and
the addresses of its parameter, gradient and states. Each program finds its tensor by counting
the first programs at or below its own (one vector load) and takes a block of whole rows (a row
is a dim-0 slice when GC centralizes the tensor, else a chunk of up to ``CHUNK`` values):

- rows of up to 64 values: 64 rows per program; up to 256: 16 rows; up to 1024: 4 rows; up to
  ``CHUNK`` (4096): one row. Each value is read from memory once and written once (the row stays
  in registers between its mean and its step).
- longer rows (fc6 of Faster R-CNN: 12544): one row per program in chunks of ``CHUNK``, in two
  passes whose second mostly hits the L2 cache: with GC on the gradient, the first sums the row
  (reading the gradient and, with L2 decay, the weight) and the second takes the step; with GC
  on the update, the first takes the step and the second shifts the weight by the mean change.

Arithmetic runs in float32 (float64 for float64 tensors); fp16 / bf16 values are rounded once,
when stored. Every result depends only on the row, never on the grid: a tensor stepped alone or
among others, in any order, gets the same bits.
"""
import math
import struct
from array import array
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.nn import Parameter

__all__ = ['CHUNK', 'gc_adam_', 'gc_centralize_', 'gc_sgd_', 'supported']

CHUNK = 4096
# Rows per program for rows of up to 64, 256 and 1024 values (longer rows: one a program).
_PACKED = ((64, 64), (256, 16), (1024, 4))
_PACKED_FLAT = [n for pair in _PACKED for n in pair]
_HEADER = 16       # float64 hyperparameters, then the first-program column, then the rows
_WIDTH = 10        # int64 values per tensor
_MAX_TENSORS = 4096
# A tensor's row in the table: first program, numel, row length, rows, flags, then the addresses
# of w, g and two states, then Adam's step count (its address, or its value); the Python table
# needs the positions of three of them.
_START, _ROW_LEN, _ROWS = 0, 2, 3
_CENTRALIZE, _FIRST = 1, 2

_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_PLAIN = (Tensor, Parameter)
_PLAIN_SET = frozenset(_PLAIN)


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
def _locate(table, n_tensors, HEADER: tl.constexpr, WIDTH: tl.constexpr, TENSORS: tl.constexpr):
    """This program's tensor (its index and table row), its block number within the tensor, and
    the tensor's size, row length and row count."""
    pid = tl.program_id(0)
    index = _find(table, n_tensors, pid, HEADER, TENSORS)
    row = table + HEADER + n_tensors + index * WIDTH
    program = pid - tl.load(table + HEADER + index)
    return index, row, program, tl.load(row + 1), tl.load(row + 2), tl.load(row + 3)


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
    index, row, program, numel, row_len, n_rows = _locate(table, n_tensors, HEADER, WIDTH,
                                                          TENSORS)
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
    index, row, program, numel, row_len, n_rows = _locate(table, n_tensors, HEADER, WIDTH,
                                                          TENSORS)
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
    index, row, program, numel, row_len, n_rows = _locate(table, n_tensors, HEADER, WIDTH,
                                                          TENSORS)
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
# The table is checked and written by C++ (csrc/gc_triton_table.cpp, part of the CPU kernels'
# build: a few microseconds for a Faster R-CNN group, against about half a millisecond in
# Python); where that build is missing, by the Python below, which checks the same things.
USE_CPP_TABLE = True


def _table_builder() -> Optional[Any]:
    if not USE_CPP_TABLE:
        return None
    from mmgc.ops import cpu_kernels
    kernels = cpu_kernels()
    return kernels if kernels is not None and hasattr(kernels, 'gc_triton_table') else None


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


def _laid_out_as(t: Tensor, w: Tensor) -> bool:
    """Whether a gradient or a state has its param's dtype, device, shape and strides, and is
    memory the kernels may use (no subclass, no lazy negation, not an inference tensor)."""
    return (type(t) in _PLAIN and t.layout is torch.strided and t.dtype is w.dtype
            and t.device == w.device and t.shape == w.shape and t.stride() == w.stride()
            and not t.is_neg() and not t.is_inference())


def _rows(param: Tensor, conv_only: bool) -> Optional[Tuple[int, int, bool]]:
    """``(row_len, n_rows, centralized)`` of a dense tensor, or None where a centralized
    tensor's dim-0 slices are not blocks of memory (dim 0 not outermost)."""
    numel = param.numel()
    if param.dim() >= (4 if conv_only else 2) and numel > param.shape[0]:
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


def _count_column(counts: Sequence[Tensor], in_table: bool,
                  device: torch.device) -> Optional[List[int]]:
    """As ``count_column`` in ``csrc/gc_triton_table.cpp``: each step count's address, or with
    ``in_table`` the count this step reaches; None when some count cannot be used."""
    first = counts[0]
    out = []
    for t in counts:
        if (t.layout is not torch.strided or t.numel() != 1 or t.requires_grad
                or t.is_inference() or t.is_neg() or t.dtype is not first.dtype
                or t.device != first.device
                or t.dtype not in (torch.float32, torch.float64)):
            return None
        if in_table:
            if t.device.type != 'cpu':
                return None
            count = float(t)
            if not 0 <= count < 2**32 - 1 or count != math.floor(count):
                return None
            out.append(int(count) + 1)
        else:
            if t.device != device:
                return None
            out.append(t.data_ptr())
    return out


def _python_table(params: Sequence[Tensor], grads: Sequence[Tensor],
                  states: Sequence[Sequence[Tensor]], flags: Sequence[int],
                  counts: Sequence[Tensor], counts_in_table: bool, conv_only: bool,
                  centralized_only: bool, header: List[float]) -> Optional[Tuple[Tensor, int]]:
    """The table and its program count as ``csrc/gc_triton_table.cpp`` writes them, or None
    when some tensor cannot take the kernels (the same checks)."""
    first = params[0]
    if (not supported(first) or len(flags) != len(params) or len(states) > 2
            or any(len(column) != len(params) for column in states)
            or (counts and len(counts) != len(params))):
        return None
    extra = [0] * len(params)
    if counts:
        extra = _count_column(counts, counts_in_table, first.device)
        if extra is None or len(extra) != len(params):
            return None
    rows: List[List[int]] = []
    for i, w in enumerate(params):
        if (not supported(w) or w.dtype is not first.dtype or w.device != first.device
                or not _laid_out_as(grads[i], w)
                or not all(_laid_out_as(column[i], w) for column in states)):
            return None
        if not w.numel():
            continue
        layout = _rows(w, conv_only)
        if layout is None or (centralized_only and not layout[2]):
            return None
        row_len, n_rows, centralize = layout
        addresses = [column[i].data_ptr() for column in states] + [0, 0]
        rows.append([0, w.numel(), row_len, n_rows,
                     (_CENTRALIZE if centralize else 0) | flags[i], w.data_ptr(),
                     grads[i].data_ptr(), addresses[0], addresses[1], extra[i]])
    if not _disjoint(list(params) + [t for column in states for t in column]):
        return None
    starts = []
    total = 0
    for row in rows:
        starts.append(total)
        row[_START] = total
        total += _programs(row[_ROW_LEN], row[_ROWS])
    values = array('q', _bits(header))
    values.extend(starts)
    for row in rows:
        values.extend(row)
    table = torch.frombuffer(values, dtype=torch.int64).clone()
    if first.device.type == 'cuda':
        table = table.pin_memory()
    return table, total


def _bits(values: Sequence[float]) -> List[int]:
    return list(struct.unpack(f'<{len(values)}q', struct.pack(f'<{len(values)}d', *values)))


def _table(params: Sequence[Tensor], grads: Sequence[Tensor], states: Sequence[Sequence[Tensor]],
           flags: Sequence[int], counts: Sequence[Tensor], counts_in_table: bool,
           conv_only: bool, centralized_only: bool,
           header: Sequence[float]) -> Optional[Tuple[Tensor, int, int]]:
    """``(table on the params' device, programs, tensors)`` for one launch, or None when some
    tensor cannot take the kernels (nothing changed then). ``counts``: Adam's step counts
    (else empty), whose addresses (or, ``counts_in_table``, next values) fill the last column;
    when the table is taken they are counted up."""
    if not params or len(params) > _MAX_TENSORS or len(grads) != len(params):
        return None
    # Exactly torch.Tensor / nn.Parameter (a subclass expects to see the operations run on it).
    for tensors in (params, grads, counts, *states):
        if not _PLAIN_SET.issuperset(map(type, tensors)):
            return None
    header = [float(h) for h in header] + [0.0] * (_HEADER - len(header))
    builder = _table_builder()
    if builder is not None:
        taken, table, total = builder.gc_triton_table(
            list(params), list(grads), [list(column) for column in states], list(flags),
            list(counts), counts_in_table, conv_only, centralized_only, CHUNK, header, _HEADER,
            _PACKED_FLAT, params[0].device.type == 'cuda')
        if not taken:
            return None
        counted = counts_in_table and bool(counts)  # (the C++ counted the CPU step counts)
    else:
        built = _python_table(params, grads, states, flags, counts, counts_in_table, conv_only,
                              centralized_only, header)
        if built is None:
            return None
        table, total = built
        counted = False
    if counts and not counted:
        torch._foreach_add_(list(counts), 1.0)
    tensors = (table.numel() - _HEADER) // (_WIDTH + 1)
    device = params[0].device
    if device.type != 'cpu':
        table = table.to(device, non_blocking=True)
    return table, total, tensors


def _launch(kernel, prepared: Tuple[Tensor, int, int], proto: Tensor, **constants) -> None:
    """One program per block of rows, over the tensors of a prepared table."""
    table, total, tensors = prepared
    if total == 0:
        return
    f64 = proto.dtype is torch.float64
    kernel[(total, )](table, table.view(torch.float64), tensors, proto, F64=f64, CHUNK=CHUNK,
                      HEADER=_HEADER, WIDTH=_WIDTH,
                      TENSORS=max(16, triton.next_power_of_2(tensors)),
                      num_warps=num_warps(f64), **constants)


def num_warps(f64: bool) -> int:
    """4 warps, from timing the step kernels on an H200 over Faster R-CNN's shapes (README): 4
    warps ran the fused SGD step in 0.28 ms where 8 and 16 took 0.39; a 4096-value tile is then
    32 values a thread. float64 keeps 8 warps (its doubles would spill more at 4)."""
    return 8 if f64 else 4


_EMPTY: Dict[Tuple[torch.dtype, torch.device], Tensor] = {}


def _empty_like_on(tensor: Tensor, device: torch.device) -> Tensor:
    """An empty tensor of ``tensor``'s dtype on ``device``, kept for reuse."""
    key = (tensor.dtype, device)
    if key not in _EMPTY:
        _EMPTY[key] = torch.empty(0, dtype=tensor.dtype, device=device)
    return _EMPTY[key]


def _bump(tensors: Sequence[Tensor]) -> None:
    """Written through their addresses: tell autograd they changed, as an in-place op would."""
    torch.autograd.graph.increment_version(list(tensors))


def gc_centralize_(tensors: Sequence[Tensor], params: Sequence[Tensor], decay: float) -> bool:
    """``t[i] -= mean(t[i] + decay * p[i])`` for every dim-0 slice of every tensor (all of them
    centralized ones: the caller selects them), in one launch per dtype. Returns False, having
    changed nothing, when some tensor cannot take the kernel."""
    if not tensors or (decay != 0 and len(params) != len(tensors)):
        return False
    by_dtype: Dict[torch.dtype, List[int]] = {}
    for i, t in enumerate(tensors):
        by_dtype.setdefault(getattr(t, 'dtype', None), []).append(i)
    if len(by_dtype) > 1 and not _disjoint(tensors):
        return False
    launches = []
    for indices in by_dtype.values():
        chosen = [tensors[i] for i in indices]
        paired = [params[i] for i in indices] if decay != 0 else chosen
        prepared = _table(chosen, paired, [], [0] * len(chosen), [], False, False, True,
                          [float(decay)])
        if prepared is None:
            return False
        launches.append((prepared, chosen[0]))
    for prepared, proto in launches:
        _launch(_centralize_kernel, prepared, proto, DECAY=decay != 0)
    _bump(tensors)
    return True


def gc_sgd_(params: Sequence[Tensor], grads: Sequence[Tensor], bufs: Sequence[Optional[Tensor]],
            conv_only: bool, weight_decay: float, decoupled_weight_decay: float, momentum: float,
            dampening: float, lr: float, nesterov: bool,
            maximize: bool) -> Tuple[bool, List[Tensor]]:
    """One SGD(W) step of a param group on ``Phi(s * g + weight_decay * w)`` (see
    ``csrc/gc_sgd_cpu.cpp`` for the math). Returns whether it was taken (False: nothing
    changed) and the momentum buffers (new ones where a param had none: torch's first step)."""
    use_momentum = momentum != 0
    if not params or (use_momentum and len(bufs) != len(params)):
        return False, []
    flags = [0] * len(params)
    out: List[Tensor] = []
    if use_momentum:
        out = list(bufs)
        if any(b is None for b in out):
            if not supported(params[0]):
                return False, []
            for i, buf in enumerate(out):
                if buf is None:
                    out[i] = torch.empty_like(params[i], memory_format=torch.preserve_format)
                    flags[i] = _FIRST
    header = [-1.0 if maximize else 1.0, weight_decay, 1.0 - lr * decoupled_weight_decay,
              momentum, 1.0 - dampening, lr]
    prepared = _table(params, grads, [out] if use_momentum else [], flags, [], False, conv_only,
                      False, header)
    if prepared is None:
        return False, []
    _launch(_sgd_kernel, prepared, params[0], DECAY=weight_decay != 0, MOMENTUM=use_momentum,
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
    if not params or len(steps) != len(params):
        return False
    first = steps[0]
    device = params[0].device
    in_table = first.device != device if steps_in_table is None else steps_in_table
    l2 = 0.0 if decoupled else weight_decay
    header = [-1.0 if maximize else 1.0, l2, 1.0 - lr * weight_decay if decoupled else 1.0,
              1.0 - beta1, beta2, 1.0 - beta2, eps, lr, beta1, beta2]
    prepared = _table(params, grads, [exp_avgs, exp_avg_sqs], [0] * len(params), steps,
                      in_table, conv_only, False, header)  # (counts the steps)
    if prepared is None:
        return False
    # Counts in the table are not read by the kernel, but its pointer argument must still be
    # on the params' device: a compiled launch refuses a CPU tensor (the interpreter does not).
    step_proto = _empty_like_on(first, device) if in_table else first
    try:
        _launch(_adam_kernel, prepared, params[0], step_proto=step_proto, DECAY=l2 != 0,
                UPDATE=bool(centralize_update), STEP_IN_TABLE=in_table)
    except Exception:  # not compiled or not launched: the plain path counts the step again
        torch._foreach_sub_(list(steps), 1.0)
        raise
    _bump(list(params) + list(exp_avgs) + list(exp_avg_sqs))
    return True


# Whether Triton's interpreter runs the kernels (TRITON_INTERPRET=1 when this module was loaded).
INTERPRETED = type(_sgd_kernel).__name__ == 'InterpretedFunction'
