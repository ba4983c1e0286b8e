"""GC optimizers on parameters sharded by FSDP2 (``fully_shard``: DTensors, ``Shard(0)``) on two
CPU processes (gloo), with the fused kernels on: the gathered weights equal a single-process run.

FSDP2's DTensors take the plain path (the kernels read plain CPU memory only); GC centralizes
each rank's local shard, whose dim-0 slices are whole. The model has a weight whose dim 0 does not
divide by 2 (uneven shards) and one with a single row (an empty shard on rank 1).
"""
import sys

import torch

if __package__ in (None, ''):  # (run as a rank's script)
    sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[2]))
from tests.test_dist.ranks import (GC_CONFIGS as CONFIGS, WORLD, join, leave,  # noqa: E402
                                    make_model, run_ranks, train)


def optimizer_for(name: str, params) -> torch.optim.Optimizer:
    __import__('mmgc')  # (registers the GC optimizers)
    from mmengine.registry import OPTIMIZERS
    return OPTIMIZERS.build(dict(CONFIGS[name], params=params))


def worker(rank: int, port: int, out: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    from mmgc.ops import cpu_kernels

    assert cpu_kernels() is not None, 'the fused kernels must be on for this test'
    join(rank, port)
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
        train(model, optimizer_for(name, model.parameters()), rank, WORLD)
        results[name] = dict(
            shards=shards,
            weights={n: p.full_tensor().detach() for n, p in model.named_parameters()})
    results['centralize_'] = check_centralize(mesh)
    torch.save(results, f'{out}.{rank}')
    leave()


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


def test_fsdp2_sharded_steps_equal_a_single_process(tmp_path):
    """SGDGC and AdamWGC (both gc_loc), 3 steps on 2 ranks: the gathered weights equal a
    single-process run to 1e-12 (float64); centralize_ on DTensors of other placements."""
    out = str(tmp_path / 'weights')
    run_ranks(__file__, [out], tmp_path, MMGC_FUSED_KERNELS='1')
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
        train(model, optimizer_for(name, model.parameters()))
        for n, p in model.named_parameters():
            for result in results:
                sharded = result[name]['weights'][n]
                assert ((sharded - p).norm() / p.norm()).item() <= 1e-12, (name, n)
            if p.dim() > 1 and name != 'AdamWGC':   # SGD and gc_loc='update': means kept
                torch.testing.assert_close(p.flatten(1).mean(1), start[n].flatten(1).mean(1),
                                           rtol=0, atol=1e-12)


if __name__ == '__main__':
    worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
