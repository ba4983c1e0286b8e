"""Compiled fast paths for CPU tensors: fused GC + optimizer-step kernels (SGD(W), Adam(W)) and
the GC operator in one visit of each row (the fast path of :func:`mmgc.gc.centralize_`).

Built on first use with torch's C++ extension loader (a C++20 compiler is needed; about a
minute, once per torch version: the build is cached in ``$TORCH_EXTENSIONS_DIR`` or
``~/.cache/torch_extensions``). Where it cannot be built, mmgc warns once and takes the plain
path (:func:`mmgc.gc.centralize_` followed by torch's own step), which computes the same thing.

``MMGC_FUSED_KERNELS=0`` switches the kernels off; :func:`fused_kernels` does so for a block.
"""
import hashlib
import os
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

from torch import Tensor

__all__ = ['cpu_kernels', 'fused_groups', 'fused_kernels']

_CSRC = Path(__file__).parent / 'csrc'
_SOURCES = [_CSRC / name for name in ('bindings.cpp', 'gc_sgd_cpu.cpp', 'gc_adam_cpu.cpp',
                                        'gc_centralize_cpu.cpp')]
_HEADER = _CSRC / 'gc_cpu.h'
_state: dict = dict(enabled=os.environ.get('MMGC_FUSED_KERNELS', '1') != '0', module=None,
                    failed=False)


def _remove_stale_lock(build_dir: Path, max_age_s: float = 600.0) -> None:
    """torch's loader waits forever on the lock of a build that was killed: drop old locks."""
    lock = build_dir / 'lock'
    try:
        if time.time() - lock.stat().st_mtime > max_age_s:
            lock.unlink()
    except FileNotFoundError:
        pass


def cpu_kernels() -> Optional[Any]:
    """The compiled CPU kernels, or ``None`` when they are off or cannot be built."""
    if not _state['enabled'] or _state['failed']:
        return None
    if _state['module'] is None:
        try:  # a private helper of torch's: without it, only the clean-up is skipped
            from torch.utils.cpp_extension import _get_build_directory
            _remove_stale_lock(Path(_get_build_directory('mmgc_gc_cpu', verbose=False)))
        except (ImportError, OSError):
            pass
        try:
            from torch.utils.cpp_extension import load
            # torch rebuilds when a source or a flag changes; the digest covers the header.
            digest = hashlib.sha1(b''.join(p.read_bytes() for p in _SOURCES + [_HEADER]))
            _state['module'] = load(
                name='mmgc_gc_cpu', sources=[str(s) for s in _SOURCES],
                extra_cflags=['-O3', '-fopenmp', '-fno-math-errno',
                              f'-DMMGC_SOURCES={digest.hexdigest()[:12]}'],
                extra_include_paths=[str(_CSRC)], extra_ldflags=['-fopenmp'], verbose=False)
        except Exception as error:  # no compiler, no headers: the plain path still works
            _state['failed'] = True
            warnings.warn(f'mmgc: the fused CPU GC kernels could not be built ({error}); '
                          'using the plain path (same results, slower)')
            return None
    return _state['module']


@contextmanager
def fused_kernels(enabled: bool) -> Iterator[None]:
    """Switches the fused kernels on or off inside the ``with`` block (for checking)."""
    saved = _state['enabled']
    _state['enabled'] = enabled
    try:
        yield
    finally:
        _state['enabled'] = saved


def fused_groups(optimizer: Any) -> Iterator[Tuple[Any, dict, List[Tensor]]]:
    """``(kernels, group, params with a gradient)`` for each param group of a GC optimizer whose
    options the fused CPU kernels support; none when the kernels are off. The kernels then check
    the tensors (CPU, float32 / float64, dense, gradients and states laid out as the params) and
    take the whole group or leave it all to the plain path."""
    kernels = cpu_kernels()
    if kernels is None:
        return
    for group in optimizer.param_groups:
        lr = group['lr']
        if (not group.get('use_gc', True) or group.get('differentiable')
                or group.get('capturable') or group.get('amsgrad')
                or (isinstance(lr, Tensor) and (lr.requires_grad or lr.device.type != 'cpu'))):
            continue
        params = [p for p in group['params'] if p.grad is not None]
        if params and params[0].device.type == 'cpu':  # (the kernels check every tensor)
            yield kernels, group, params
