"""mmgc.utils.launch: --amp's optim wrapper conversion, and --launcher pytorch / slurm on gloo
without CUDA (what tools/train.py and tools/test.py call)."""
import os
import re
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
import torch.nn as nn
from mmengine.config import Config
from mmengine.model import MMDistributedDataParallel
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.runner import Runner

import mmgc.utils.launch as launch
from mmgc import AmpGCOptimWrapper, GCOptimWrapper
from mmgc.utils import amp_optim_wrapper, init_cpu_distributed
from mmgc.utils.launch import LauncherEnvError

from .toy import ToyDataset, ToyModel

# --- --amp ------------------------------------------------------------------------------------


@pytest.mark.parametrize('wrapper_type, expected', [
    ('OptimWrapper', 'AmpOptimWrapper'),
    ('GCOptimWrapper', 'AmpGCOptimWrapper'),
    ('AmpOptimWrapper', 'AmpOptimWrapper'),
    ('AmpGCOptimWrapper', 'AmpGCOptimWrapper'),
    ('mmengine.OptimWrapper', 'mmengine.AmpOptimWrapper'),
    ('mmdet.GCOptimWrapper', 'mmdet.AmpGCOptimWrapper'),
    (OptimWrapper, AmpOptimWrapper),
    (GCOptimWrapper, AmpGCOptimWrapper),
])
def test_amp_optim_wrapper_maps_types(wrapper_type, expected):
    cfg = dict(type=wrapper_type, optimizer=dict(type='SGDGC', lr=0.02, momentum=0.9),
               clip_grad=dict(max_norm=35), gc_conv_only=True, loss_scale=512.)
    out = amp_optim_wrapper(cfg)
    assert out is cfg
    assert cfg == dict(type=expected, optimizer=dict(type='SGDGC', lr=0.02, momentum=0.9),
                       clip_grad=dict(max_norm=35), gc_conv_only=True, loss_scale='dynamic')


def test_amp_optim_wrapper_default_type_and_config_dict():
    """No ``type`` is mmengine's OptimWrapper; a loaded Config's ConfigDict works in place."""
    cfg = Config(dict(optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1), _scope_='mmdet')))
    amp_optim_wrapper(cfg.optim_wrapper)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    assert cfg.optim_wrapper._scope_ == 'mmdet'


@pytest.mark.parametrize('wrapper_type', ['OptimWrapperDict', 'MyWrapper', 'mmdet.Foo', 3])
def test_amp_optim_wrapper_refuses_other_types(wrapper_type):
    cfg = dict(type=wrapper_type, optimizer=dict(type='SGD', lr=0.1))
    with pytest.raises(ValueError, match='--amp converts optim_wrapper.type OptimWrapper or '
                                         'GCOptimWrapper'):
        amp_optim_wrapper(cfg)
    assert cfg['type'] == wrapper_type and 'loss_scale' not in cfg


@pytest.mark.parametrize('cuda, npu, mlu, musa, expected', [
    (False, False, False, False, False), (True, False, False, False, True),
    (False, True, False, False, True), (False, False, True, False, True),
    (False, False, False, True, True)])
def test_amp_device_available(monkeypatch, cuda, npu, mlu, musa, expected):
    for name, value in (('is_cuda_available', cuda), ('is_npu_available', npu),
                        ('is_mlu_available', mlu), ('is_musa_available', musa)):
        monkeypatch.setattr(launch, name, lambda value=value: value)
    assert launch.amp_device_available() is expected


# --- --launcher pytorch without CUDA -----------------------------------------------------------


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


#: What torchrun or srun set; cleared by the fixtures below (a test may run inside a real job).
LAUNCHER_VARS = ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'LOCAL_WORLD_SIZE', 'GROUP_RANK',
                 'MASTER_ADDR', 'MASTER_PORT', 'SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_LOCALID',
                 'SLURM_NODELIST', 'SLURM_NODEID')


@pytest.fixture
def cpu_process(monkeypatch):
    """No accelerator, no launcher variables; the process group and the start method of
    multiprocessing are put back afterwards."""
    monkeypatch.setattr(launch, 'amp_device_available', lambda: False)
    monkeypatch.setitem(launch._initialized, 'gloo', False)
    for key in LAUNCHER_VARS:
        # set first, so that what the code under test sets is removed afterwards too
        monkeypatch.setenv(key, '')
        monkeypatch.delenv(key)
    start_method = mp.get_start_method(allow_none=True)
    # A distributed Runner sets OMP_NUM_THREADS / MKL_NUM_THREADS=1 where unset: not for the
    # processes that later tests start.
    threads = {k: os.environ.get(k) for k in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS')}
    assert not torch_dist.is_initialized()
    yield
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()
    mp.set_start_method(start_method, force=True)
    for key, value in threads.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def torchrun_env(cpu_process, monkeypatch):
    """A one-process torchrun environment on CPU."""
    for key, value in dict(RANK='0', LOCAL_RANK='0', WORLD_SIZE='1', LOCAL_WORLD_SIZE='1',
                           MASTER_ADDR='127.0.0.1', MASTER_PORT=str(free_port())).items():
        monkeypatch.setenv(key, value)


SCONTROL = """#!/usr/bin/env bash
echo "$@" >> {log}
{body}
"""


def put_scontrol(folder, monkeypatch, body='printf "127.0.0.1\\nnode8\\n"', mode=0o755):
    """A stand-in ``scontrol`` first (and alone) on PATH, with this body; its calls are logged
    to ``folder/scontrol.log``. Returns the log's path."""
    folder.mkdir(exist_ok=True)
    log = folder / 'scontrol.log'
    (folder / 'scontrol').write_text(SCONTROL.format(log=log, body=body))
    (folder / 'scontrol').chmod(mode)
    # the shell's basic commands, no real scontrol
    monkeypatch.setenv('PATH', os.pathsep.join([str(folder), '/usr/bin', '/bin']))
    return log


@pytest.fixture
def slurm_env(cpu_process, monkeypatch, tmp_path):
    """The environment srun gives the one task of a one-node job, without MASTER_ADDR and
    MASTER_PORT; scontrol names 127.0.0.1 the first host. Returns scontrol's log."""
    for key, value in dict(SLURM_PROCID='0', SLURM_NTASKS='1', SLURM_LOCALID='0',
                           SLURM_NODELIST='node[7-8]', SLURM_NODEID='0').items():
        monkeypatch.setenv(key, value)
    return put_scontrol(tmp_path / 'bin', monkeypatch)


@pytest.fixture
def recorded_init(monkeypatch):
    """init_process_group recorded instead of run (no process group, no port taken)."""
    calls = []
    monkeypatch.setattr(launch.torch_dist, 'init_process_group',
                        lambda **kwargs: calls.append(kwargs))
    return calls


def test_gloo_process_group_and_cpu_ready_model_wrapper(torchrun_env):
    cfg = Config(dict(launcher='pytorch', find_unused_parameters=True,
                      env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend='nccl',
                                                                        timeout=60))))
    assert init_cpu_distributed(cfg) is True
    assert torch_dist.is_initialized()
    assert torch_dist.get_backend() == 'gloo'
    assert (torch_dist.get_rank(), torch_dist.get_world_size()) == (0, 1)
    assert cfg.env_cfg.dist_cfg == dict(backend='gloo', timeout=60)
    assert cfg.env_cfg.cudnn_benchmark is False
    assert cfg.model_wrapper_cfg == dict(type='MMDistributedDataParallel', device_ids=None,
                                         broadcast_buffers=False, find_unused_parameters=True)
    # Already initialized: nothing more to do.
    assert init_cpu_distributed(cfg) is False


@pytest.mark.parametrize('wrapper, expected', [
    (dict(type='MMDistributedDataParallel', device_ids=[0], broadcast_buffers=True),
     dict(type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=True)),
    (dict(broadcast_buffers=True), dict(broadcast_buffers=True, device_ids=None)),
    (dict(type=MMDistributedDataParallel), dict(type=MMDistributedDataParallel,
                                                device_ids=None)),
    # Not a DistributedDataParallel: no device_ids argument to give.
    (dict(type=nn.Module), dict(type=nn.Module)),
])
def test_configured_model_wrapper_gets_cpu_device_ids(torchrun_env, wrapper, expected):
    cfg = Config(dict(launcher='pytorch', model_wrapper_cfg=wrapper))
    assert init_cpu_distributed(cfg, 'pytorch') is True
    assert cfg.model_wrapper_cfg == expected
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'


def test_runner_trains_with_launcher_pytorch_on_cpu(torchrun_env, tmp_path):
    """mmengine's own init would call torch.cuda.set_device; after init_cpu_distributed the
    Runner skips it, wraps the model in DDP on the CPU and trains."""
    cfg = Config(dict(launcher='pytorch', env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    assert init_cpu_distributed(cfg) is True
    runner = Runner(
        model=ToyModel(), work_dir=str(tmp_path), launcher='pytorch',
        train_dataloader=dict(dataset=ToyDataset(8), batch_size=4, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=True),
                              collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=3),
        optim_wrapper=dict(optimizer=dict(type='SGDGC', lr=0.05, momentum=0.9)),
        default_scope='mmengine', randomness=dict(seed=0), env_cfg=cfg.env_cfg, cfg=cfg)
    assert isinstance(runner.model, MMDistributedDataParallel)
    assert runner.model.device_ids is None
    assert (runner.rank, runner.world_size, runner.distributed) == (0, 1, True)
    before = {k: v.clone() for k, v in runner.model.module.state_dict().items()}
    runner.train()
    assert runner.iter == 3
    after = runner.model.module.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_nothing_to_do(slurm_env, monkeypatch):
    """launcher none / mpi, or an accelerator with pytorch / slurm (mmengine's own path, nccl):
    untouched, the environment too (here a complete srun one)."""
    before = dict(os.environ)
    for launcher in ('none', 'mpi'):
        cfg = Config(dict(launcher=launcher, env_cfg=dict(dist_cfg=dict(backend='nccl'))))
        assert init_cpu_distributed(cfg) is False
        assert cfg.env_cfg.dist_cfg.backend == 'nccl' and 'model_wrapper_cfg' not in cfg
    monkeypatch.setattr(launch, 'amp_device_available', lambda: True)
    for launcher in ('pytorch', 'slurm'):
        cfg = Config(dict(launcher=launcher, env_cfg=dict(dist_cfg=dict(backend='nccl'))))
        assert init_cpu_distributed(cfg) is False
        assert cfg.env_cfg.dist_cfg.backend == 'nccl' and 'model_wrapper_cfg' not in cfg
    assert not torch_dist.is_initialized()
    assert dict(os.environ) == before and not slurm_env.exists()


@pytest.mark.parametrize('env, message', [
    ({}, 'RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT not set; start the processes with torchrun'),
    (dict(RANK='0', MASTER_ADDR='127.0.0.1'), 'WORLD_SIZE, MASTER_PORT not set; start the'),
    (dict(RANK='first', WORLD_SIZE='2', MASTER_ADDR='127.0.0.1', MASTER_PORT='29500'),
     "RANK='first' is not an integer"),
])
def test_without_torchrun_environment(cpu_process, monkeypatch, recorded_init, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = Config(dict(launcher='pytorch'))
    # a RuntimeError (as before LauncherEnvError) whose message is one line
    with pytest.raises(RuntimeError, match='^--launcher pytorch: ' + message) as error:
        init_cpu_distributed(cfg)
    assert isinstance(error.value, LauncherEnvError) and '\n' not in str(error.value)
    assert cfg.to_dict() == dict(launcher='pytorch') and not recorded_init


# --- --launcher slurm without CUDA -------------------------------------------------------------


def test_slurm_gloo_process_group_from_srun_environment(slurm_env, monkeypatch):
    """The task's srun variables give RANK / WORLD_SIZE / LOCAL_RANK, scontrol's first host
    MASTER_ADDR, MASTER_PORT (set) is kept; a real gloo group starts, the model wrapper is made
    CPU-ready as for torchrun."""
    port = str(free_port())
    monkeypatch.setenv('MASTER_PORT', port)
    cfg = Config(dict(launcher='slurm', find_unused_parameters=True,
                      env_cfg=dict(dist_cfg=dict(backend='nccl', timeout=60))))
    assert init_cpu_distributed(cfg) is True
    assert torch_dist.is_initialized() and torch_dist.get_backend() == 'gloo'
    assert (torch_dist.get_rank(), torch_dist.get_world_size()) == (0, 1)
    assert {k: os.environ[k] for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR',
                                       'MASTER_PORT')} == dict(
        RANK='0', WORLD_SIZE='1', LOCAL_RANK='0', MASTER_ADDR='127.0.0.1', MASTER_PORT=port)
    assert slurm_env.read_text() == 'show hostname node[7-8]\n'
    assert cfg.env_cfg.dist_cfg == dict(backend='gloo', timeout=60)
    assert cfg.model_wrapper_cfg == dict(type='MMDistributedDataParallel', device_ids=None,
                                         broadcast_buffers=False, find_unused_parameters=True)
    assert launch._initialized['gloo'] is True
    assert init_cpu_distributed(cfg) is False  # already initialized


@pytest.mark.parametrize('env, dist_port, expected_addr, expected_port', [
    # mmengine's defaults: the first host scontrol names, port 29500
    ({}, None, '127.0.0.1', '29500'),
    (dict(MASTER_PORT='31001'), None, '127.0.0.1', '31001'),
    # env_cfg.dist_cfg.port before MASTER_PORT
    (dict(MASTER_PORT='31001'), 31002, '127.0.0.1', '31002'),
    # MASTER_ADDR set: kept, scontrol not asked, SLURM_NODELIST not needed
    (dict(MASTER_ADDR='10.0.0.7', SLURM_NODELIST=None), None, '10.0.0.7', '29500'),
])
def test_slurm_master_address_and_port(slurm_env, monkeypatch, recorded_init, env, dist_port,
                                       expected_addr, expected_port):
    for key, value in dict(env, SLURM_PROCID='5', SLURM_NTASKS='8', SLURM_LOCALID='1').items():
        if value is None:
            monkeypatch.delenv(key)
        else:
            monkeypatch.setenv(key, value)
    dist_cfg = dict(backend='nccl') if dist_port is None else dict(backend='nccl', port=dist_port)
    cfg = Config(dict(launcher='slurm', env_cfg=dict(dist_cfg=dist_cfg)))
    assert init_cpu_distributed(cfg) is True
    assert recorded_init == [dict(backend='gloo', init_method='env://', rank=5, world_size=8)]
    assert {k: os.environ[k] for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR',
                                       'MASTER_PORT')} == dict(
        RANK='5', WORLD_SIZE='8', LOCAL_RANK='1', MASTER_ADDR=expected_addr,
        MASTER_PORT=expected_port)
    assert slurm_env.exists() is ('MASTER_ADDR' not in env)


def test_slurm_without_localid(slurm_env, monkeypatch, recorded_init):
    """SLURM_LOCALID unset: LOCAL_RANK 0 (it picks no device on the CPU)."""
    monkeypatch.delenv('SLURM_LOCALID')
    monkeypatch.setenv('LOCAL_RANK', '3')  # e.g. train.py's --local_rank default
    assert init_cpu_distributed(Config(dict(launcher='slurm'))) is True
    assert os.environ['LOCAL_RANK'] == '0' and recorded_init[0]['rank'] == 0


@pytest.mark.parametrize('env, scontrol, message', [
    (dict(SLURM_PROCID=None, SLURM_NTASKS=None), None,
     'SLURM_PROCID, SLURM_NTASKS not set; start the processes with srun (tools/slurm_train.sh, '
     'tools/slurm_test.sh)'),
    (dict(SLURM_NODELIST=None), None, 'SLURM_NODELIST not set; start the processes with srun'),
    (dict(SLURM_NTASKS='two'), None, "SLURM_NTASKS='two' is not an integer"),
    (dict(SLURM_LOCALID='0,1'), None, "SLURM_LOCALID='0,1' is not an integer"),
    (dict(SLURM_PROCID='2', SLURM_NTASKS='2'), None,
     'SLURM_PROCID=2 is not a task of SLURM_NTASKS=2 (0 to 1)'),
    (dict(SLURM_PROCID='-1'), None, 'SLURM_PROCID=-1 is not a task of SLURM_NTASKS=1'),
    (dict(SLURM_NTASKS='0'), None, 'SLURM_NTASKS=0: no task to run'),
    ({}, 'missing', 'MASTER_ADDR is not set and scontrol, which finds the first host of '
     "SLURM_NODELIST, is not on PATH; set MASTER_ADDR to the address of the first task's host"),
    ({}, 'not_executable', re.compile(
        r'scontrol show hostname node\[7-8\] failed \(\[Errno 13\] Permission denied.*\); set '
        r"MASTER_ADDR to the address of the first task's host$")),
    (dict(SLURM_NODELIST='node[7-'), 'echo "scontrol: error: Invalid hostlist: $3" >&2; exit 1',
     'scontrol show hostname node[7- gave no host (scontrol: error: Invalid hostlist: node[7-); '
     "check SLURM_NODELIST, or set MASTER_ADDR to the address of the first task's host"),
    ({}, 'exit 0', 'scontrol show hostname node[7-8] gave no host (no host written); check'),
    ({}, 'exit 3', 'scontrol show hostname node[7-8] gave no host (exit status 3); check'),
])
def test_slurm_environment_errors(slurm_env, monkeypatch, recorded_init, tmp_path, env,
                                  scontrol, message):
    """A LauncherEnvError (one line, for train.py's error line); nothing is changed: neither
    the config nor the environment, no process group."""
    for key, value in env.items():
        if value is None:
            monkeypatch.delenv(key)
        else:
            monkeypatch.setenv(key, value)
    if scontrol == 'missing':
        (tmp_path / 'bin' / 'scontrol').unlink()
    elif scontrol == 'not_executable':
        put_scontrol(tmp_path / 'bin', monkeypatch, mode=0o644)
    elif scontrol is not None:
        put_scontrol(tmp_path / 'bin', monkeypatch, body=scontrol)
    before = dict(os.environ)
    cfg = Config(dict(launcher='slurm', env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    pattern = message.pattern if isinstance(message, re.Pattern) else re.escape(message)
    with pytest.raises(LauncherEnvError, match='^--launcher slurm: ' + pattern) as error:
        init_cpu_distributed(cfg)
    assert '\n' not in str(error.value)
    assert dict(os.environ) == before and not recorded_init and not launch._initialized['gloo']
    assert cfg.to_dict() == dict(launcher='slurm', env_cfg=dict(dist_cfg=dict(backend='nccl')))


def test_slurm_bad_dist_cfg_port(slurm_env, recorded_init):
    cfg = Config(dict(launcher='slurm', env_cfg=dict(dist_cfg=dict(port='auto'))))
    with pytest.raises(LauncherEnvError, match="^--launcher slurm: env_cfg.dist_cfg.port='auto' "
                                               'is not a port number$'):
        init_cpu_distributed(cfg)
    assert 'RANK' not in os.environ and not recorded_init


END_SCRIPT = """
import atexit, os, sys
import torch.distributed as torch_dist
from mmengine.config import Config
import mmgc.utils.launch as launch
from mmgc.utils import end_cpu_distributed, init_cpu_distributed
launch.amp_device_available = lambda: False
if sys.argv[1] == 'gloo':
    assert init_cpu_distributed(Config(dict(launcher='pytorch'))) is True
@atexit.register
def record():
    with open(sys.argv[2], 'w') as f:
        f.write(str(torch_dist.is_initialized()))
print('work done', end='')  # no newline: must still be flushed
end_cpu_distributed()
print(' and on')
"""


@pytest.mark.parametrize('mode', ['gloo', 'none'])
def test_end_cpu_distributed(mode, tmp_path):
    """A rank of a gloo group that init_cpu_distributed started: exit handlers run (the group
    still up for them; it is closed by the handler init_cpu_distributed registered, which runs
    after), output is flushed, then the process ends with status 0 at once, skipping torch's C++
    teardown. Without such a group it returns and the process goes on as usual."""
    record = tmp_path / 'record.txt'
    env = dict(os.environ, RANK='0', LOCAL_RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1',
               MASTER_PORT=str(free_port()), CUDA_VISIBLE_DEVICES='')
    proc = subprocess.run([sys.executable, '-c', textwrap.dedent(END_SCRIPT), mode, str(record)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if mode == 'gloo':
        assert proc.stdout == 'work done'
        assert record.read_text() == 'True'
    else:
        assert proc.stdout == 'work done and on\n'
        assert record.read_text() == 'False'

