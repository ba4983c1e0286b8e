"""Fused fast paths: GC + optimizer-step kernels (SGD(W), Adam(W)) and the GC operator in one
visit of each row (the fast path of :func:`mmgc.gc.centralize_`), compiled C++ for CPU tensors
(``csrc/``) and Triton for CUDA tensors (``gc_triton.py``).

CUDA tensors take the Triton kernels (:func:`triton_kernels`): one launch per param group (per
dtype for :func:`mmgc.gc.centralize_`), float32 / float16 / bfloat16 / float64, tensors in any
dense layout (channels_last included). Where Triton is missing or a kernel fails to compile,
mmgc warns once, in one line, and takes the plain path. With ``MMGC_TRITON_ON_CPU=1`` and
Triton's interpreter (``TRITON_INTERPRET=1`` set before Triton is first imported), CPU tensors
take the Triton kernels instead of the C++ ones: that is how they are tested without a GPU.

CPU kernels:

Built on first use with torch's C++ extension loader (a C++20 compiler is needed; about a
minute, once per torch version: the build is cached in ``$TORCH_EXTENSIONS_DIR`` or
``~/.cache/torch_extensions``). Processes that start at once share one build: torch's loader holds
an OS lock on ``<build dir>/lock`` while it builds, which the OS releases when a builder dies, so
the next process rebuilds instead of waiting on a stale lock. Where the kernels cannot be built,
mmgc warns once, in one line, and takes the plain path (:func:`mmgc.gc.centralize_` followed by
torch's own step), which computes the same thing; ``MMGC_BUILD_VERBOSE=1`` shows the build's
whole log.

The kernels take only what they can read directly: exact ``torch.Tensor`` / ``nn.Parameter``
objects, dense (strided), on the CPU (:func:`kernel_tensor`) or on a CUDA device. Tensor
subclasses (``DTensor`` of FSDP2 / tensor parallelism, ``FakeTensor``, any
``__torch_dispatch__`` wrapper), meta and sparse tensors, and param groups that list a parameter
twice take the plain path.

``MMGC_FUSED_KERNELS=0`` switches all kernels off (CPU and CUDA); :func:`fused_kernels` does so
for a block.
"""
import hashlib
import logging
import os
import re
import shlex
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

import torch
from torch import Tensor
from torch.nn import Parameter

from mmgc.dist.fsdp import fsdp_flattened

__all__ = ['cpu_kernels', 'fused_groups', 'fused_kernels', 'kernel_tensor', 'kernels_for',
           'triton_kernels']

_CSRC = Path(__file__).parent / 'csrc'
_SOURCES = [_CSRC / name for name in ('bindings.cpp', 'gc_sgd_cpu.cpp', 'gc_adam_cpu.cpp',
                                        'gc_centralize_cpu.cpp', 'gc_triton_table.cpp')]
_HEADER = _CSRC / 'gc_cpu.h'
_state: dict = dict(enabled=os.environ.get('MMGC_FUSED_KERNELS', '1') != '0', module=None,
                    failed=False, triton=None, triton_failed=False)


_KERNEL_TYPES = (Tensor, Parameter)


def kernel_tensor(tensor: Any) -> bool:
    """Whether the compiled kernels may take ``tensor``: exactly a ``torch.Tensor`` or an
    ``nn.Parameter`` (no subclass: a ``DTensor`` or another ``__torch_dispatch__`` wrapper may
    have no memory of its own, and a subclass expects to see the operations run on it), dense
    (strided) and on the CPU (not meta). The kernels check the rest (dtype, layout, storage)."""
    return (type(tensor) in _KERNEL_TYPES and tensor.is_cpu
            and tensor.layout is torch.strided)


def _compiler() -> str:
    """The C++ compiler torch's loader runs (``$CXX``, else ``c++``)."""
    return os.environ.get('CXX', 'c++')


def _build_failure(error: BaseException) -> str:
    """One line that says why the build failed: a missing compiler, else the first error line
    of the build log, else its first line."""
    compiler = _compiler()
    try:
        program = shlex.split(compiler)[0]
    except (ValueError, IndexError):
        program = compiler
    if shutil.which(program) is None:
        return f'no C++ compiler found ({compiler})'
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    # torch prefixes the log with "Error building extension '...': " and the first command
    lines = [re.sub(r"^Error building extension '[^']*':\s*", '', line) for line in lines]
    line = next((line for line in lines if re.search(r'\berror\b', line, re.IGNORECASE)),
                lines[0] if lines else type(error).__name__)
    return line if len(line) <= 200 else line[:197] + '...'


@contextmanager
def _torch_build_logs_held(hold: bool) -> Iterator[List[logging.LogRecord]]:
    """Keeps what torch's loader logs while it builds (its compiler warnings run to pages) in
    the list yielded, instead of printing it; ``hold=False`` leaves the logging alone."""
    records: List[logging.LogRecord] = []
    if not hold:
        yield records
        return
    logger = logging.getLogger('torch.utils.cpp_extension')

    class Keep(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            records.append(record)
            return False

    keep = Keep()
    logger.addFilter(keep)
    try:
        yield records
    finally:
        logger.removeFilter(keep)


def cpu_kernels() -> Optional[Any]:
    """The compiled CPU kernels, or ``None`` when they are off or cannot be built."""
    if not _state['enabled'] or _state['failed']:
        return None
    if _state['module'] is None:
        verbose = os.environ.get('MMGC_BUILD_VERBOSE', '0') not in ('', '0')
        with _torch_build_logs_held(not verbose) as held:
            try:
                from torch.utils.cpp_extension import load
                # torch rebuilds when a source or a flag changes; the digest covers the header.
                digest = hashlib.sha1(b''.join(p.read_bytes() for p in _SOURCES + [_HEADER]))
                _state['module'] = load(
                    name='mmgc_gc_cpu', sources=[str(s) for s in _SOURCES],
                    extra_cflags=['-O3', '-fopenmp', '-fno-math-errno',
                                  f'-DMMGC_SOURCES={digest.hexdigest()[:12]}'],
                    extra_include_paths=[str(_CSRC)], extra_ldflags=['-fopenmp'],
                    verbose=verbose)
            except Exception as error:  # no compiler, no headers: the plain path still works
                _state['failed'] = True
                detail = (f':\n{error}' if verbose else
                          '; MMGC_BUILD_VERBOSE=1 shows the build log')
                warnings.warn(f'mmgc: fused CPU kernels not built ({_build_failure(error)}); '
                              f'using the plain path (same results, slower){detail}',
                              stacklevel=2)
                return None
        logger = logging.getLogger('torch.utils.cpp_extension')
        for record in held:  # it built: what torch said about the compiler still counts
            logger.handle(record)
    return _state['module']


def _triton_on_cpu() -> bool:
    """Whether CPU tensors should take the Triton kernels (``MMGC_TRITON_ON_CPU=1``), which
    then run under Triton's interpreter (``TRITON_INTERPRET=1`` before Triton is imported)."""
    return os.environ.get('MMGC_TRITON_ON_CPU', '0').strip().lower() in ('1', 'true', 'on', 'yes')


def _triton_failed(error: BaseException) -> None:
    _state['triton_failed'] = True
    line = next((ln.strip() for ln in str(error).splitlines() if ln.strip()), type(error).__name__)
    warnings.warn(f'mmgc: Triton GC kernels unavailable ({type(error).__name__}: {line[:200]}); '
                  'using the plain path (same results, slower)', stacklevel=3)


class _TritonKernels:
    """The Triton launchers (``gc_triton.py``) behind the CPU kernels' interface. A launch that
    fails (a GPU Triton cannot compile for, a missing compiler) switches them off with one
    warning, and the call answers "not taken", having changed nothing, so the plain path runs."""

    checks_tensors = True  # (types, devices, layouts: whatever it cannot take, it refuses)

    def __init__(self, module: Any) -> None:
        self.module = module
        self.interpreted = module.INTERPRETED

    def _guarded(self, name: str, refused: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self.module, name)(*args, **kwargs)
        except Exception as error:  # compilation or launch: the plain path still works
            _triton_failed(error)
            return refused

    def gc_sgd_(self, *args: Any, **kwargs: Any) -> Tuple[bool, List[Tensor]]:
        return self._guarded('gc_sgd_', (False, []), *args, **kwargs)

    def gc_adam_(self, *args: Any, **kwargs: Any) -> bool:
        return self._guarded('gc_adam_', False, *args, **kwargs)

    def gc_centralize_(self, *args: Any, **kwargs: Any) -> bool:
        return self._guarded('gc_centralize_', False, *args, **kwargs)


def triton_kernels() -> Optional[_TritonKernels]:
    """The Triton kernels, or ``None`` when they are off, Triton is missing, or they failed."""
    if not _state['enabled'] or _state['triton_failed']:
        return None
    if _state['triton'] is None:
        try:
            from . import gc_triton
        except Exception as error:  # no triton, or one too old for the kernels
            _triton_failed(error)
            return None
        _state['triton'] = _TritonKernels(gc_triton)
    return _state['triton']


def kernels_for(device: torch.device) -> Optional[Any]:
    """The fused kernels for tensors on ``device``: Triton's on CUDA (and on the CPU with
    ``MMGC_TRITON_ON_CPU=1``, when Triton interprets), the compiled C++ ones on the CPU; ``None``
    elsewhere or when off."""
    if device.type == 'cuda':
        return triton_kernels()
    if device.type == 'cpu':
        if _triton_on_cpu():
            kernels = triton_kernels()
            if kernels is not None and kernels.interpreted:
                return kernels
        return cpu_kernels()
    return None


@contextmanager
def fused_kernels(enabled: bool) -> Iterator[None]:
    """Switches the fused kernels on or off inside the ``with`` block (for checking)."""
    saved = _state['enabled']
    _state['enabled'] = enabled
    try:
        yield
    finally:
        _state['enabled'] = saved


def _group_takes_kernels(params: List[Tensor]) -> bool:
    """Whether the kernels may take these params of a group: each distinct (torch steps a
    parameter listed twice twice, and the kernels' threads would step it at the same time) and,
    with its gradient, a :func:`kernel_tensor` (inlined: this runs on every step). The kernels
    check the optimizer states themselves."""
    if len(set(map(id, params))) != len(params):
        return False
    strided = torch.strided
    for p in params:
        grad = p.grad
        if not (type(p) in _KERNEL_TYPES and type(grad) in _KERNEL_TYPES and p.is_cpu
                and grad.is_cpu and p.layout is strided and grad.layout is strided):
            return False
    return True


def fused_groups(optimizer: Any) -> Iterator[Tuple[Any, dict, List[Tensor]]]:
    """``(kernels, group, params with a gradient)`` for each param group of a GC optimizer whose
    options and tensors the fused kernels support (see :func:`kernel_tensor`; no parameter
    twice; CUDA tensors for the Triton kernels); none when the kernels are off. The kernels
    then check the tensors again (dtype, dense, gradients and states laid out as the params,
    memory of their own) and take the whole group or leave it all to the plain path."""
    if not _state['enabled']:
        return
    built = optimizer.__dict__.get('_gc_built')  # (what mmgc.dist.partitions recorded)
    for index, group in enumerate(optimizer.param_groups):
        lr = group['lr']
        if (not group.get('use_gc', True) or group.get('differentiable')
                or group.get('capturable') or group.get('amsgrad')
                or (isinstance(lr, Tensor) and (lr.requires_grad or lr.device.type != 'cpu'))):
            continue
        params = [p for p in group['params'] if p.grad is not None]
        if not params:
            continue
        # FSDP's flat shards: their rows may span ranks (mmgc.dist.fsdp), not for the kernels
        if (built.holds_flat_shards(index, group['params']) if built is not None
                else any(map(fsdp_flattened, group['params']))):
            continue
        kernels = kernels_for(params[0].device)
        if kernels is None:
            continue
        if isinstance(kernels, _TritonKernels):  # (they check types and devices themselves)
            if len(set(map(id, params))) == len(params):
                yield kernels, group, params
        elif _group_takes_kernels(params):
            yield kernels, group, params
