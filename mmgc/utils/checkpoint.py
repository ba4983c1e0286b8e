"""Safe loading of mmengine checkpoints under torch >= 2.6's ``weights_only=True`` default.

mmengine 0.10 pickles a few non-tensor objects into the checkpoints it writes (the message hub's
``HistoryBuffer`` logs, numpy scalars, dtypes and arrays, and ``getattr(HistoryBuffer, 'min')``
style references to the buffer's statistics methods). torch's safe unpickler refuses them, so
``--resume`` and ``tools/test.py CONFIG CKPT`` fail. :func:`allow_mmengine_checkpoints` adds
exactly those objects to torch's allow-list; safe mode stays on, and a checkpoint that pickles
anything else (``os.system``, say) is still refused.
"""
import pickle
from typing import Any, List

import numpy as np
import torch

__all__ = ['allow_mmengine_checkpoints']


_DEFAULT_STATISTICS = ('min', 'max', 'current', 'mean')


def _history_buffer_statistic(owner: Any, name: str) -> Any:
    """``getattr`` as mmengine checkpoints use it: a statistics method of ``HistoryBuffer``."""
    from mmengine.logging import HistoryBuffer
    # HistoryBuffer registers its default statistics only when a first buffer is made, so a
    # fresh process that loads a checkpoint has an empty ``_statistics_methods``.
    if owner is HistoryBuffer and (name in _DEFAULT_STATISTICS
                                   or name in HistoryBuffer._statistics_methods):
        return getattr(owner, name)
    raise pickle.UnpicklingError(f'getattr({owner!r}, {name!r}) is not allowed in a checkpoint')


def _numpy_globals() -> List[Any]:
    try:
        from numpy._core.multiarray import _reconstruct, scalar  # numpy >= 2
    except ImportError:
        from numpy.core.multiarray import _reconstruct, scalar
    allowed: List[Any] = [np.dtype, np.ndarray]
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        allowed += [(scalar, f'{module}.scalar'), (_reconstruct, f'{module}._reconstruct')]
    # numpy >= 1.25 may pickle a dtype by its class (numpy.dtypes.Float64DType, ...).
    allowed += sorted({type(np.dtype(t)) for t in np.sctypeDict.values()}, key=str)
    return allowed


def allow_mmengine_checkpoints() -> None:
    """Allow-lists what mmengine puts into checkpoints for ``torch.load(weights_only=True)``.

    Called by ``import mmgc``; idempotent. A no-op on torch without ``add_safe_globals``.
    """
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is None:
        return
    from mmengine.logging import HistoryBuffer
    add_safe_globals([HistoryBuffer, (_history_buffer_statistic, 'builtins.getattr')] +
                     _numpy_globals())
