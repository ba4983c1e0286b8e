"""What mmgc's ``tools/train.py`` and ``tools/test.py`` add to mmdet's: ``--amp`` for GC
configs, and ``--launcher pytorch`` on machines without CUDA.

- :func:`amp_optim_wrapper` turns a config's ``optim_wrapper`` into its mixed-precision form:
  ``OptimWrapper`` -> ``AmpOptimWrapper`` (a GC optimizer such as ``SGDGC`` works under it) and
  ``GCOptimWrapper`` -> ``AmpGCOptimWrapper``, with ``loss_scale='dynamic'``. mmdet's own
  ``--amp`` would replace ``GCOptimWrapper`` by ``AmpOptimWrapper`` and so drop the GC options.
- :func:`amp_device_available` says whether ``AmpOptimWrapper`` can be built at all (it asserts a
  CUDA, NPU, MLU or MUSA device).
- :func:`init_cpu_distributed`: mmengine's ``_init_dist_pytorch`` calls ``torch.cuda.set_device``
  and so fails without CUDA. On such a machine this initializes the process group on gloo from
  torchrun's environment (``env://``) before the ``Runner`` is built (the ``Runner`` then skips
  its own initialization) and makes the model wrapper CPU-ready (DDP's ``device_ids=None``).

Only torch and mmengine are imported here.
"""
import atexit
import datetime
import os
import sys
from typing import Any, MutableMapping, Optional

import torch.distributed as torch_dist
import torch.multiprocessing as mp
from mmengine.device import (is_cuda_available, is_mlu_available, is_musa_available,
                             is_npu_available)

__all__ = ['AMP_OPTIM_WRAPPERS', 'amp_device_available', 'amp_optim_wrapper',
           'end_cpu_distributed', 'init_cpu_distributed']

_initialized = {'gloo': False}

#: ``--amp``: the wrapper types it converts, and what they become.
AMP_OPTIM_WRAPPERS = {
    'OptimWrapper': 'AmpOptimWrapper',
    'GCOptimWrapper': 'AmpGCOptimWrapper',
    # Already mixed precision: kept (``loss_scale`` still becomes dynamic, as mmdet's --amp).
    'AmpOptimWrapper': 'AmpOptimWrapper',
    'AmpGCOptimWrapper': 'AmpGCOptimWrapper',
}


def amp_device_available() -> bool:
    """True where ``AmpOptimWrapper`` can be built: a CUDA, NPU, MLU or MUSA device exists."""
    return (is_cuda_available() or is_npu_available() or is_mlu_available()
            or is_musa_available())


def _amp_type(wrapper_type: Any) -> Any:
    """The AMP form of an optim wrapper type (a name, ``scope.Name``, or a class); None if none."""
    if isinstance(wrapper_type, type):
        from mmengine.optim import AmpOptimWrapper, OptimWrapper

        from ..optim import AmpGCOptimWrapper, GCOptimWrapper
        classes = {OptimWrapper: AmpOptimWrapper, GCOptimWrapper: AmpGCOptimWrapper,
                   AmpOptimWrapper: AmpOptimWrapper, AmpGCOptimWrapper: AmpGCOptimWrapper}
        return classes.get(wrapper_type)
    if not isinstance(wrapper_type, str):
        return None
    scope, dot, name = wrapper_type.rpartition('.')
    amp_name = AMP_OPTIM_WRAPPERS.get(name)
    return None if amp_name is None else f'{scope}{dot}{amp_name}'


def amp_optim_wrapper(optim_wrapper: MutableMapping) -> MutableMapping:
    """Turns an ``optim_wrapper`` config into its mixed-precision form, in place.

    ``OptimWrapper`` (also when ``type`` is left out, mmengine's default) becomes
    ``AmpOptimWrapper`` and ``GCOptimWrapper`` becomes ``AmpGCOptimWrapper``; the AMP forms stay;
    ``loss_scale`` is set to ``'dynamic'``. Everything else in the config (optimizer, GC options,
    ``clip_grad``, ``constructor``, ...) is kept.

    Raises:
        ValueError: any other wrapper type (``OptimWrapperDict``, a custom wrapper, ...), whose
            AMP form this cannot know.

    Returns:
        The same ``optim_wrapper``.
    """
    wrapper_type = optim_wrapper.get('type', 'OptimWrapper')
    amp_type = _amp_type(wrapper_type)
    if amp_type is None:
        shown = getattr(wrapper_type, '__name__', wrapper_type)
        raise ValueError(
            f'--amp converts optim_wrapper.type OptimWrapper or GCOptimWrapper (to '
            f'AmpOptimWrapper / AmpGCOptimWrapper), not {shown!r}: set the mixed-precision '
            'wrapper in the config instead')
    optim_wrapper['type'] = amp_type
    optim_wrapper['loss_scale'] = 'dynamic'
    return optim_wrapper


def _ddp_wrapper_type(wrapper_type: Any) -> bool:
    """Whether a model wrapper type is (a subclass of) torch's DistributedDataParallel."""
    from torch.nn.parallel import DistributedDataParallel
    if isinstance(wrapper_type, str):
        from mmengine.registry import MODEL_WRAPPERS
        try:
            wrapper_type = MODEL_WRAPPERS.get(wrapper_type)
        except KeyError:  # a scope that is not imported
            return False
    return isinstance(wrapper_type, type) and issubclass(wrapper_type, DistributedDataParallel)


def init_cpu_distributed(cfg: MutableMapping, launcher: Optional[str] = None) -> bool:
    """Initializes torch.distributed on gloo for ``--launcher pytorch`` without an accelerator.

    Where a CUDA (or NPU/MLU/MUSA) device exists, where the launcher is not ``pytorch``, or where
    a process group already exists, this does nothing and mmengine's ``Runner`` initializes as
    usual (nccl on CUDA). Otherwise it

    - initializes the default process group with ``backend='gloo'`` and ``init_method='env://'``
      from the ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` that torchrun sets
      (``env_cfg.dist_cfg.timeout``, in seconds, is honoured), before the ``Runner`` is built;
    - sets ``env_cfg.dist_cfg.backend = 'gloo'`` so the config says what runs;
    - makes the model wrapper CPU-ready: ``MMDistributedDataParallel`` (or any other
      ``DistributedDataParallel``) gets ``device_ids=None`` where the ``Runner`` would pass
      ``[LOCAL_RANK]``, which torch refuses for a CPU module. Without ``model_wrapper_cfg`` the
      ``Runner``'s own default is written out: ``MMDistributedDataParallel`` with
      ``broadcast_buffers=False`` and the config's ``find_unused_parameters``.

    Args:
        cfg: the config (an mmengine ``Config``), changed in place.
        launcher: the launcher; ``cfg['launcher']`` when None.

    Returns:
        True when it initialized the process group.
    """
    launcher = cfg.get('launcher', 'none') if launcher is None else launcher
    if (launcher != 'pytorch' or amp_device_available()
            or (torch_dist.is_available() and torch_dist.is_initialized())):
        return False
    if not torch_dist.is_available():
        raise RuntimeError('--launcher pytorch needs torch.distributed, which this torch lacks')
    missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')
               if k not in os.environ]
    if missing:
        raise RuntimeError(f'--launcher pytorch: {", ".join(missing)} not set; start the '
                           'processes with torchrun (tools/dist_train.sh, tools/dist_test.sh)')

    env_cfg = cfg.get('env_cfg') or {}
    dist_cfg = dict(env_cfg.get('dist_cfg') or {})
    dist_cfg['backend'] = 'gloo'
    env_cfg['dist_cfg'] = dist_cfg
    cfg['env_cfg'] = env_cfg

    wrapper_cfg = cfg.get('model_wrapper_cfg')
    if wrapper_cfg is None:
        cfg['model_wrapper_cfg'] = dict(
            type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    elif _ddp_wrapper_type(wrapper_cfg.get('type', 'MMDistributedDataParallel')):
        wrapper_cfg['device_ids'] = None

    # What mmengine's init_dist does first, for the same behaviour of worker processes.
    if mp.get_start_method(allow_none=True) is None:
        mp.set_start_method('spawn')
    kwargs = {}
    timeout = dist_cfg.get('timeout')
    if timeout is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=timeout)
    torch_dist.init_process_group(
        backend='gloo', init_method='env://', rank=int(os.environ['RANK']),
        world_size=int(os.environ['WORLD_SIZE']), **kwargs)
    atexit.register(_leave_process_group)
    _initialized['gloo'] = True
    return True


def end_cpu_distributed() -> None:
    """Ends a rank whose gloo group :func:`init_cpu_distributed` started, once its work is done
    (the last call of ``tools/train.py`` and ``tools/test.py``); without one it does nothing.

    It runs the exit handlers (the ranks meet and close the group, logs are flushed), then ends
    the process with status 0 without the interpreter's teardown. That teardown destroys torch's
    C++ objects in no set order, and one of them can still own a running thread: about one
    two-rank run in a hundred then ended with "terminate called without an active exception"
    (SIGABRT) after its results were written, and torchrun reported the run as failed."""
    if not _initialized['gloo']:
        return
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed or broken stream: nothing more can be said on it
            pass
    os._exit(0)


def _leave_process_group() -> None:
    """At exit, the ranks meet (for 60 s at most: a rank that failed does not come) and then
    close the gloo group together. A rank whose process ends while gloo's threads in another
    still read from it can end that other process with std::terminate (SIGABRT) after its work
    is done."""
    if not torch_dist.is_initialized():
        return
    try:
        torch_dist.monitored_barrier(timeout=datetime.timedelta(seconds=60))
    except Exception:  # a rank that failed or left: close anyway
        pass
    try:
        torch_dist.destroy_process_group()
    except Exception:
        pass
