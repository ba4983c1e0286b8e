"""mmgc.utils.launch: --amp's optim wrapper conversion, and --launcher pytorch on gloo without
CUDA (what tools/train.py and tools/test.py call)."""
import os
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


@pytest.fixture
def torchrun_env(monkeypatch):
    """A one-process torchrun environment on CPU; the process group and the start method of
    multiprocessing are put back afterwards."""
    monkeypatch.setattr(launch, 'amp_device_available', lambda: False)
    monkeypatch.setitem(launch._initialized, 'gloo', False)
    for key, value in dict(RANK='0', LOCAL_RANK='0', WORLD_SIZE='1', LOCAL_WORLD_SIZE='1',
                           MASTER_ADDR='127.0.0.1', MASTER_PORT=str(free_port())).items():
        monkeypatch.setenv(key, value)
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


def test_nothing_to_do(monkeypatch):
    """launcher none / slurm / mpi, or an accelerator (mmengine's own path, nccl): untouched."""
    for launcher in ('none', 'slurm', 'mpi'):
        cfg = Config(dict(launcher=launcher, env_cfg=dict(dist_cfg=dict(backend='nccl'))))
        assert init_cpu_distributed(cfg) is False
        assert cfg.env_cfg.dist_cfg.backend == 'nccl' and 'model_wrapper_cfg' not in cfg
    monkeypatch.setattr(launch, 'amp_device_available', lambda: True)
    cfg = Config(dict(launcher='pytorch', env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    assert init_cpu_distributed(cfg) is False
    assert cfg.env_cfg.dist_cfg.backend == 'nccl' and 'model_wrapper_cfg' not in cfg
    assert not torch_dist.is_initialized()


def test_without_torchrun_environment(monkeypatch):
    monkeypatch.setattr(launch, 'amp_device_available', lambda: False)
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(RuntimeError, match='RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT not set; '
                                           'start the processes with torchrun'):
        init_cpu_distributed(Config(dict(launcher='pytorch')))
    assert not torch_dist.is_initialized()


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

