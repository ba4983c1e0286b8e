"""GC optimizers and the GC optim wrapper on FSDP1's flat shards (``FullyShardedDataParallel``,
as mmengine's ``FSDPStrategy`` wraps models), two CPU ranks over gloo: the gathered weights equal
a single-process run, with ``use_orig_params`` True and False, rows split between the ranks.

Two FSDP units: the root flattens the conv (5 rows of 27) and the last fc; the inner one the first
fc (3 rows of 80). The ranks' halves split a row of each (conv row 2, fc row 1).
"""
import os
import sys

import pytest
import torch
from mmengine.model import BaseModel

if __package__ in (None, ''):  # (run as a rank's script)
    sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[2]))
from tests.test_dist.ranks import (GC_CONFIGS, WORLD, batches, join, leave,  # noqa: E402
                                    make_model, run_ranks, train)

CONFIGS = {
    **GC_CONFIGS,
    'SGDGC-conv-only': dict(type='SGDGC', lr=0.1, momentum=0.9, gc_conv_only=True),
    'GCOptimWrapper-SGD': dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-2),
    'GCOptimWrapper-Adam-update': dict(type='Adam', lr=0.01, gc_loc='update'),
}
# name: (use_orig_params, sharding strategy, the configs run with it)
LAYOUTS = {
    'use_orig_params': (True, 'FULL_SHARD', tuple(CONFIGS)),
    'flat_params': (False, 'FULL_SHARD', tuple(CONFIGS)),
    'shard_grad_op': (True, 'SHARD_GRAD_OP', ('SGDGC', 'AdamWGC-update')),
    'optimizer_built_first': (True, 'FULL_SHARD', ('SGDGC', 'GCOptimWrapper-SGD')),
    'no_shard-use_orig_params': (True, 'NO_SHARD', ('SGDGC', 'AdamWGC-update')),
    'no_shard-flat_params': (False, 'NO_SHARD', ('SGDGC', 'AdamWGC-update')),
}
RUNNER_CONFIGS = ('SGDGC', 'AdamWGC-update')


def make_step(name: str, model: torch.nn.Module):
    """The optimizer (or GC wrapper) ``name`` over ``model``'s parameters; returns its step."""
    __import__('mmgc')  # (registers the GC optimizers)
    from mmengine.registry import OPTIMIZERS
    cfg = dict(CONFIGS[name])
    gc_loc = cfg.pop('gc_loc', 'grad') if name.startswith('GCOptimWrapper') else None
    optimizer = OPTIMIZERS.build(dict(cfg, params=model.parameters()))
    if gc_loc is None:
        return optimizer
    from mmgc import GCOptimWrapper
    return GCOptimWrapper(optimizer=optimizer, gc_loc=gc_loc)


class Toy(BaseModel):
    """:func:`make_model` as an mmengine model: the loss of :func:`train`."""

    def __init__(self) -> None:
        super().__init__()
        self.net = make_model()

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.net(inputs)  # (default_collate stacked them)
        return dict(loss=out.pow(2).mean()) if mode == 'loss' else out


class Images(torch.utils.data.Dataset):
    """The images of :func:`batches`, in order."""

    def __init__(self) -> None:
        self.images = torch.cat(batches())

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return dict(inputs=self.images[index])


def flexible_runner(work_dir: str, name: str) -> list:
    """mmengine's FlexibleRunner with FSDPStrategy (its default use_orig_params=True) and the
    optimizer ``name`` by config: one epoch of 2 ranks x 2 images, the order of batches()."""
    from mmengine.runner import FlexibleRunner

    __import__('mmgc')  # (what custom_imports=dict(imports=['mmgc']) does)
    runner = FlexibleRunner(
        model=Toy(), work_dir=work_dir, launcher='pytorch',
        strategy=dict(type='FSDPStrategy', model_wrapper=dict(
            type='MMFullyShardedDataParallel', device_id=torch.device('cpu'))),
        train_dataloader=dict(dataset=Images(), batch_size=2, collate_fn=dict(
            type='default_collate'), sampler=dict(type='DefaultSampler', shuffle=False)),
        optim_wrapper=dict(optimizer=dict(CONFIGS[name])),
        train_cfg=dict(by_epoch=True, max_epochs=1), default_hooks=dict(checkpoint=None),
        cfg=dict(env_cfg=dict(dist_cfg=dict(backend='gloo'))))
    runner.train()
    return runner.model


def worker(rank: int, port: int, out: str) -> None:
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD))
    join(rank, port)
    results = {}
    for name in RUNNER_CONFIGS:
        model = flexible_runner(f'{out}.work{rank}', name)
        with FSDP.summon_full_params(model, writeback=False):
            results['FlexibleRunner', name] = {
                n.replace('_fsdp_wrapped_module.', '').replace('net.', '', 1): p.detach().clone()
                for n, p in model.named_parameters()}
    from torch.distributed.fsdp import ShardingStrategy
    for layout, (orig, strategy, names) in LAYOUTS.items():
        options = dict(use_orig_params=orig, device_id=torch.device('cpu'),
                       sharding_strategy=getattr(ShardingStrategy, strategy))
        for name in names:
            model = make_model()
            # (use_orig_params=True keeps the parameters: an optimizer may be built first)
            early = make_step(name, model) if layout == 'optimizer_built_first' else None
            model[2] = FSDP(model[2], **options)
            model = FSDP(model, **options)
            local = {n: tuple(p.shape) for n, p in model.named_parameters()}
            train(model, early or make_step(name, model), rank, WORLD)
            with FSDP.summon_full_params(model, writeback=False):
                weights = {n.replace('_fsdp_wrapped_module.', ''): p.detach().clone()
                           for n, p in model.named_parameters()}
            results[layout, name] = dict(local=local, weights=weights)
    torch.save(results, f'{out}.{rank}')
    leave()


@pytest.fixture(scope='module')
def fsdp_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('fsdp')
    run_ranks(__file__, [tmp / 'weights'], tmp)
    return [torch.load(f'{tmp / "weights"}.{rank}') for rank in range(WORLD)]


def reference(name: str) -> dict:
    model = make_model()
    train(model, make_step(name, model))
    return dict(model.named_parameters())


@pytest.mark.parametrize('layout,name', [(layout, name) for layout, (_, _, names)
                                         in LAYOUTS.items() for name in names])
def test_fsdp1_flat_shards_equal_a_single_process(fsdp_results, layout, name):
    """3 steps on 2 ranks whose shards split rows: every rank's gathered weights equal the
    single-process run to 1e-12 (float64). A GC that took each rank's part of a row for the row
    (or skipped the 1-D shards) gives weights 1e-3 and more away (checked against use_gc=False).
    NO_SHARD keeps every weight whole on every rank: nothing to add up."""
    pieces = [r[layout, name]['local'].get('_fsdp_wrapped_module.0.weight')
              for r in fsdp_results]
    if layout in ('use_orig_params', 'shard_grad_op', 'optimizer_built_first'):  # (row of 27)
        assert len(pieces[0]) == 1 and pieces[0][0] + pieces[1][0] == 135 and pieces[0][0] % 27
    elif layout == 'no_shard-use_orig_params':
        assert pieces == [(5, 3, 3, 3)] * 2
    expected = reference(name)
    for result in fsdp_results:
        weights = result[layout, name]['weights']
        assert sorted(weights) == sorted(expected)
        for n, p in expected.items():
            assert weights[n].shape == p.shape
            assert ((weights[n] - p).norm() / p.norm()).item() <= 1e-12, (name, n)


@pytest.mark.parametrize('name', RUNNER_CONFIGS)
def test_flexible_runner_fsdp_strategy_equals_a_single_process(fsdp_results, name):
    """``FlexibleRunner(strategy=dict(type='FSDPStrategy'), optim_wrapper=dict(optimizer=dict(
    type='SGDGC', ...)))`` on 2 ranks: one epoch (3 iterations of 2 x 2 images) gives the weights
    of the single-process loop to 1e-12."""
    expected = reference(name)
    for result in fsdp_results:
        weights = result['FlexibleRunner', name]
        assert sorted(weights) == sorted(expected)
        for n, p in expected.items():
            assert ((weights[n] - p).norm() / p.norm()).item() <= 1e-12, (name, n)


@pytest.mark.parametrize('shape', [(5, 27), (3, 80), (7, 1), (1, 9), (4, 3, 2, 2)])
def test_row_sums_of_pieces_add_up_to_the_rows(shape):
    """A weight cut into pieces at every kind of point (inside a row, on a boundary, empty
    pieces, one piece spanning many rows): the pieces' row sums add up to the row sums, and
    subtracting the means piece by piece centralizes the weight."""
    from mmgc.dist.fsdp import row_sums_, subtract_row_means_
    gen = torch.Generator().manual_seed(sum(shape))
    weight = torch.randn(shape, generator=gen, dtype=torch.float64)
    rows, row = shape[0], weight[0].numel()
    flat = weight.flatten()
    for _ in range(20):
        cuts = sorted(torch.randint(0, flat.numel() + 1, (3, ), generator=gen).tolist())
        bounds = [0, *cuts, flat.numel()]
        sums = torch.zeros(rows, dtype=torch.float64)
        for a, b in zip(bounds, bounds[1:]):
            row_sums_(sums, flat[a:b], a, row)
        torch.testing.assert_close(sums, weight.flatten(1).sum(1), rtol=0, atol=1e-12)
        pieces = [flat[a:b].clone() for a, b in zip(bounds, bounds[1:])]
        for a, piece in zip(bounds, pieces):
            subtract_row_means_(piece, sums / row, a, row)
        expected = weight - weight.flatten(1).mean(1).view(-1, *[1] * (len(shape) - 1))
        torch.testing.assert_close(torch.cat(pieces).view(shape), expected, rtol=0, atol=1e-12)


def test_the_fsdp_test_would_see_gc_off():
    """The single-process runs the FSDP ones are checked against differ from runs without GC
    by far more than the test's tolerance."""
    for name in ('SGDGC', 'AdamWGC-update'):
        with_gc = reference(name)
        CONFIGS[name]['use_gc'] = False
        try:
            without = reference(name)
        finally:
            del CONFIGS[name]['use_gc']
        far = max(((with_gc[n] - without[n]).norm() / without[n].norm()).item()
                  for n in with_gc if with_gc[n].dim() > 1)
        assert far > 1e-3, (name, far)


if __name__ == '__main__':
    worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
