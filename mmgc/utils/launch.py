"""What mmgc's ``tools/train.py`` and ``tools/test.py`` add to mmdet's: ``--amp`` for GC
configs, and ``--launcher pytorch`` / ``--launcher slurm`` on machines without CUDA.

- :func:`amp_optim_wrapper` turns a config's ``optim_wrapper`` into its mixed-precision form:
  ``OptimWrapper`` -> ``AmpOptimWrapper`` (a GC optimizer such as ``SGDGC`` works under it) and
  ``GCOptimWrapper`` -> ``AmpGCOptimWrapper``, with ``loss_scale='dynamic'``. mmdet's own
  ``--amp`` would replace ``GCOptimWrapper`` by ``AmpOptimWrapper`` and so drop the GC options.
- :func:`amp_device_available` says whether ``AmpOptimWrapper`` can be built at all (it asserts a
  CUDA, NPU, MLU or MUSA device).
- :func:`init_cpu_distributed`: mmengine's ``_init_dist_pytorch`` and ``_init_dist_slurm`` call
  ``torch.cuda.set_device`` and so fail without CUDA. On such a machine this initializes the
  process group on gloo before the ``Runner`` is built (the ``Runner`` then skips its own
  initialization), from torchrun's environment or from the one srun gives each task, and makes
  the model wrapper CPU-ready (DDP's ``device_ids=None``). A launcher environment it cannot use
  raises :class:`LauncherEnvError`, whose message is one line.

Only torch and mmengine are imported here.
"""
import atexit
import datetime
import os
import subprocess
import sys
from typing import Any, MutableMapping, Optional, Tuple

import torch.distributed as torch_dist
import torch.multiprocessing as mp
from mmengine.device import (is_cuda_available, is_mlu_available, is_musa_available,
                             is_npu_available)

__all__ = ['AMP_OPTIM_WRAPPERS', 'LauncherEnvError', 'amp_device_available',
           'amp_optim_wrapper', 'end_cpu_distributed', 'init_cpu_distributed']

_initialized = {'gloo': False}

#: The launchers :func:`init_cpu_distributed` starts on gloo where no accelerator exists.
CPU_LAUNCHERS = ('pytorch', 'slurm')

#: The master port of a Slurm run when neither ``dist_cfg.port`` nor ``MASTER_PORT`` gives one
#: (torch.distributed's usual port, as mmengine's Slurm initialization).
SLURM_DEFAULT_PORT = 29500


class LauncherEnvError(RuntimeError):
    """The environment of ``--launcher pytorch`` / ``slurm`` cannot start the process group
    (a variable missing or malformed, ``scontrol`` missing or failing); the message is one line
    that says what to set or how to start the processes."""


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


def _env_int(launcher: str, name: str) -> int:
    """An integer environment variable of the launcher, or a :class:`LauncherEnvError`."""
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise LauncherEnvError(
            f'--launcher {launcher}: {name}={value!r} is not an integer') from None


def _first_slurm_host(node_list: str) -> str:
    """The first host of a Slurm node list (``node[01-04],gpu7``): the first line that
    ``scontrol show hostname`` writes, as mmengine's Slurm initialization takes it."""
    command = ['scontrol', 'show', 'hostname', node_list]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise LauncherEnvError(
            '--launcher slurm: MASTER_ADDR is not set and scontrol, which finds the first host of '
            "SLURM_NODELIST, is not on PATH; set MASTER_ADDR to the address of the first "
            "task's host") from None
    except (OSError, subprocess.SubprocessError) as error:
        raise LauncherEnvError(
            f'--launcher slurm: {" ".join(command)} failed ({" ".join(str(error).split())}); '
            "set MASTER_ADDR to the address of the first task's host") from None
    hosts = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not hosts:
        said = ' '.join(proc.stderr.split()) or (f'exit status {proc.returncode}'
                                                 if proc.returncode else 'no host written')
        raise LauncherEnvError(
            f'--launcher slurm: {" ".join(command)} gave no host ({said}); check '
            "SLURM_NODELIST, or set MASTER_ADDR to the address of the first task's host")
    return hosts[0].strip()


def _torchrun_environment() -> Tuple[int, int]:
    """``--launcher pytorch``: the rank and world size torchrun gives this process (which also
    sets ``MASTER_ADDR`` and ``MASTER_PORT``)."""
    missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')
               if k not in os.environ]
    if missing:
        raise LauncherEnvError(
            f'--launcher pytorch: {", ".join(missing)} not set; start the processes with '
            'torchrun (tools/dist_train.sh, tools/dist_test.sh)')
    return _env_int('pytorch', 'RANK'), _env_int('pytorch', 'WORLD_SIZE')


def _slurm_environment(port: Any = None) -> Tuple[int, int]:
    """``--launcher slurm``: the rank and world size of this srun task, with the variables of
    torch's ``env://`` initialization set from the task's environment, as mmengine's Slurm
    initialization sets them:

    - ``RANK`` from ``SLURM_PROCID``, ``WORLD_SIZE`` from ``SLURM_NTASKS``, ``LOCAL_RANK`` from
      ``SLURM_LOCALID`` (0 where unset: it picks no device on the CPU);
    - ``MASTER_PORT``: ``port`` (``env_cfg.dist_cfg.port``) if given, else ``MASTER_PORT`` if
      set, else 29500;
    - ``MASTER_ADDR``: kept if set, else the first host of ``SLURM_NODELIST``
      (``scontrol show hostname``).

    Nothing is changed where something is missing or malformed.
    """
    needed = ['SLURM_PROCID', 'SLURM_NTASKS']
    if not os.environ.get('MASTER_ADDR'):
        needed.append('SLURM_NODELIST')  # only to name the first host
    missing = [k for k in needed if not os.environ.get(k)]
    if missing:
        raise LauncherEnvError(
            f'--launcher slurm: {", ".join(missing)} not set; start the processes with srun '
            '(tools/slurm_train.sh, tools/slurm_test.sh)')
    rank, world_size = _env_int('slurm', 'SLURM_PROCID'), _env_int('slurm', 'SLURM_NTASKS')
    if world_size < 1:
        raise LauncherEnvError(f'--launcher slurm: SLURM_NTASKS={world_size}: no task to run')
    if not 0 <= rank < world_size:
        raise LauncherEnvError(
            f'--launcher slurm: SLURM_PROCID={rank} is not a task of SLURM_NTASKS={world_size} '
            f'(0 to {world_size - 1})')
    local_rank = _env_int('slurm', 'SLURM_LOCALID') if os.environ.get('SLURM_LOCALID') else 0
    if port is not None:
        try:
            master_port = str(int(port))
        except (TypeError, ValueError):
            raise LauncherEnvError(
                f'--launcher slurm: env_cfg.dist_cfg.port={port!r} is not a port number') from None
    else:
        master_port = os.environ.get('MASTER_PORT', str(SLURM_DEFAULT_PORT))
    master_addr = os.environ.get('MASTER_ADDR') or _first_slurm_host(os.environ['SLURM_NODELIST'])
    os.environ.update(MASTER_PORT=master_port, MASTER_ADDR=master_addr, RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(local_rank))
    return rank, world_size


def init_cpu_distributed(cfg: MutableMapping, launcher: Optional[str] = None) -> bool:
    """Initializes torch.distributed on gloo for ``--launcher pytorch`` or ``--launcher slurm``
    without an accelerator.

    Where a CUDA (or NPU/MLU/MUSA) device exists, where the launcher is another one (``none``,
    ``mpi``), or where a process group already exists, this does nothing and mmengine's
    ``Runner`` initializes as usual (nccl on CUDA). Otherwise it

    - reads the launcher's environment: torchrun's ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
      ``MASTER_PORT``; or srun's ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID`` and
      ``SLURM_NODELIST``, from which it sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
      ``MASTER_ADDR`` and ``MASTER_PORT`` with mmengine's defaults and precedence (see
      :func:`_slurm_environment`: ``env_cfg.dist_cfg.port``, then ``MASTER_PORT``, then 29500;
      ``MASTER_ADDR``, then the first host ``scontrol show hostname`` names);
    - initializes the default process group with ``backend='gloo'`` and ``init_method='env://'``
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

    Raises:
        LauncherEnvError: the launcher's environment is incomplete or malformed, or (Slurm,
            ``MASTER_ADDR`` unset) ``scontrol`` is missing or names no host; nothing is changed.

    Returns:
        True when it initialized the process group.
    """
    launcher = cfg.get('launcher', 'none') if launcher is None else launcher
    if (launcher not in CPU_LAUNCHERS or amp_device_available()
            or (torch_dist.is_available() and torch_dist.is_initialized())):
        return False
    if not torch_dist.is_available():
        raise RuntimeError(f'--launcher {launcher} needs torch.distributed, which this torch '
                           'lacks')

    env_cfg = cfg.get('env_cfg') or {}
    dist_cfg = dict(env_cfg.get('dist_cfg') or {})
    if launcher == 'pytorch':
        rank, world_size = _torchrun_environment()
    else:
        rank, world_size = _slurm_environment(dist_cfg.get('port'))

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
        backend='gloo', init_method='env://', rank=rank, world_size=world_size, **kwargs)
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
