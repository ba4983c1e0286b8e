"""GC optimizers on parameters sharded by FSDP2 (``fully_shard``: DTensors, ``Shard(0)``) on two
CPU processes (gloo), with the fused kernels on: the gathered weights equal a single-process run.

FSDP2's DTensors take the plain path (the kernels read plain CPU memory only); GC centralizes
each rank's local shard, whose dim-0 slices are whole. The model has a weight whose dim 0 does not
divide by 2 (uneven shards) and one with a single row (an empty shard on rank 1).
"""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
WORLD = 2
STEPS = 3
CONFIGS = {
    'SGDGC': dict(lr=0.1, momentum=0.9, weight_decay=1e-2),
    'AdamWGC': dict(lr=0.01, weight_decay=0.1),
    'AdamWGC-update': dict(lr=0.01, weight_decay=0.1, gc_loc='update'),
}


def make_model() -> torch.nn.Module:
    """conv (5 rows: 3 + 2), fc (3 rows: 2 + 1) and fc (1 row: 1 + 0), float64."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 5, 3), torch.nn.Flatten(), torch.nn.Linear(5 * 4 * 4, 3),
        torch.nn.ReLU(), torch.nn.Linear(3, 1)).double()


def batches() -> list:
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(4, 3, 6, 6, generator=gen, dtype=torch.float64) for _ in range(STEPS)]


def optimizer_for(name: str, params) -> torch.optim.Optimizer:
    from mmgc import AdamWGC, SGDGC
    cls = SGDGC if name == 'SGDGC' else AdamWGC
    return cls(params, **CONFIGS[name])


def train(model: torch.nn.Module, name: str, rank: int = 0, world: int = 1) -> None:
    """STEPS steps on this rank's part of each batch (the mean loss over the whole batch is the
    mean of the ranks' means, which FSDP2 averages)."""
    optimizer = optimizer_for(name, model.parameters())
    for batch in batches():
        part = batch.chunk(world)[rank]
        optimizer.zero_grad()
        model(part).pow(2).mean().backward()
        optimizer.step()


def worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    from mmgc.ops import cpu_kernels

    assert cpu_kernels() is not None, 'the fused kernels must be on for this test'
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=WORLD)
    mesh = init_device_mesh('cpu', (WORLD, ))
    results = {}
    for name in CONFIGS:
        model = make_model()
        for layer in model:
            if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear)):
                fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        shards = {n: tuple(p.to_local().shape) for n, p in model.named_parameters()}
        assert all(isinstance(p, DTensor) for p in model.parameters())
        train(model, name, rank, WORLD)
        results[name] = dict(
            shards=shards,
            weights={n: p.full_tensor().detach() for n, p in model.named_parameters()})
    results['centralize_'] = check_centralize(mesh)
    torch.save(results, f'{out}.{rank}')
    # Both ranks finish together: a rank that leaves while gloo's thread in the other still
    # reads from it can end that process with std::terminate (a teardown race, not GC's).
    dist.barrier()
    dist.destroy_process_group()


def check_centralize(mesh) -> dict:
    """centralize_ on DTensors: slices whole on each rank (Shard(0), uneven; Replicate) are
    centralized through the local shards; a slice split across ranks (Shard(1)) is refused."""
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    from mmgc.gc import centralize_
    full = torch.arange(35, dtype=torch.float64).view(5, 7) ** 2
    expected = full - full.mean(dim=1, keepdim=True)
    checks = {}
    for name, placement in (('Shard(0)', Shard(0)), ('Replicate', Replicate())):
        t = distribute_tensor(full.clone(), mesh, [placement])
        centralize_([t])
        checks[name] = (t.full_tensor() - expected).abs().max().item()
    try:
        centralize_([distribute_tensor(full.clone(), mesh, [Shard(1)])])
        checks['Shard(1)'] = 'not refused'
    except ValueError as error:
        checks['Shard(1)'] = str(error)
    return checks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_fsdp2_sharded_steps_equal_a_single_process(tmp_path):
    """SGDGC and AdamWGC (both gc_loc), 3 steps on 2 ranks: the gathered weights equal a
    single-process run to 1e-12 (float64); centralize_ on DTensors of other placements."""
    out = str(tmp_path / 'weights')
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT), MMGC_FUSED_KERNELS='1')
    log_files = [tmp_path / f'rank{rank}.log' for rank in range(WORLD)]
    ranks = []
    for rank, log_file in enumerate(log_files):
        with log_file.open('w') as log:
            ranks.append(subprocess.Popen([sys.executable, __file__, str(rank), str(port), out],
                                          cwd=ROOT, env=env, stdout=log,
                                          stderr=subprocess.STDOUT))
    deadline = time.time() + 600                   # (a cold cache builds the kernels first)
    while any(rank.poll() is None for rank in ranks) and time.time() < deadline:
        if any(rank.poll() not in (None, 0) for rank in ranks):
            break                                  # the other rank would wait for it forever
        time.sleep(0.2)
    for rank in ranks:
        if rank.poll() is None:
            rank.kill()
        rank.wait()
    logs = [log_file.read_text() for log_file in log_files]
    for rank, log in zip(ranks, logs):
        # an abort in native code shows as a negative return code (-6: SIGABRT)
        assert rank.returncode == 0, f'rank exited with {rank.returncode}:\n{log[-3000:]}'
    results = [torch.load(f'{out}.{rank}') for rank in range(WORLD)]
    shards = results[0]['SGDGC']['shards'], results[1]['SGDGC']['shards']
    assert shards[0]['0.weight'] == (3, 3, 3, 3) and shards[1]['0.weight'] == (2, 3, 3, 3)
    assert shards[0]['4.weight'] == (1, 3) and shards[1]['4.weight'] == (0, 3)
    for result in results:
        checks = result['centralize_']
        assert checks['Shard(0)'] <= 1e-12 and checks['Replicate'] <= 1e-12, checks
        assert 'whole on one rank' in checks['Shard(1)'], checks
    for name in CONFIGS:
        model = make_model()
        start = {n: p.detach().clone() for n, p in model.named_parameters()}
        train(model, name)
        for n, p in model.named_parameters():
            for result in results:
                sharded = result[name]['weights'][n]
                assert ((sharded - p).norm() / p.norm()).item() <= 1e-12, (name, n)
            if p.dim() > 1 and name != 'AdamWGC':   # SGD and gc_loc='update': means kept
                torch.testing.assert_close(p.flatten(1).mean(1), start[n].flatten(1).mean(1),
                                           rtol=0, atol=1e-12)


if __name__ == '__main__':
    worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
    # Results are saved: leave without the interpreter's teardown of torch's native threads.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
