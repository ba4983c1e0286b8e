"""``ZeroRedundancyOptimizer`` with a GC optimizer as ``optimizer_type`` (found in the registry),
two CPU ranks over gloo under DDP: the weights every rank ends with equal a single-process run."""
import sys

import pytest
import torch
from mmengine.registry import OPTIMIZERS, DefaultScope

if __package__ in (None, ''):  # (run as a rank's script)
    sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[2]))
import mmgc  # noqa: E402
from mmgc.dist.zero import local_optimizer_class  # noqa: E402
from tests.test_dist.ranks import WORLD, join, leave, make_model, run_ranks, train  # noqa: E402

CONFIGS = {
    'SGDGC': dict(lr=0.1, momentum=0.9, weight_decay=1e-2),
    'AdamWGC': dict(lr=0.01, weight_decay=0.1),
    'mmgc.AdamWGC': dict(lr=0.01, weight_decay=0.1, gc_loc='update'),
    'SGD': dict(lr=0.1, momentum=0.9),  # (a torch.optim name, as mmengine's took)
}


def worker(rank: int, port: int, out: str) -> None:
    from mmengine.optim import build_optim_wrapper
    from torch.nn.parallel import DistributedDataParallel as DDP
    join(rank, port)
    results = {}
    for name, options in CONFIGS.items():
        model = DDP(make_model())
        wrapper = build_optim_wrapper(model, dict(optimizer=dict(
            type='ZeroRedundancyOptimizer', optimizer_type=name, **options)))
        zero = wrapper.optimizer
        train(model, wrapper, rank, WORLD)
        results[name] = dict(
            zero=type(zero).__module__, local=type(zero.optim).__name__,
            held=sum(len(g['params']) for g in zero.optim.param_groups),
            weights={n: p.detach().clone() for n, p in model.module.named_parameters()})
    torch.save(results, f'{out}.{rank}')
    leave()


@pytest.fixture(scope='module')
def zero_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('zero')
    run_ranks(__file__, [tmp / 'weights'], tmp)
    return [torch.load(f'{tmp / "weights"}.{rank}') for rank in range(WORLD)]


@pytest.mark.parametrize('name', list(CONFIGS))
def test_zero_with_gc_optimizers_equals_a_single_process(zero_results, name):
    """optimizer=dict(type='ZeroRedundancyOptimizer', optimizer_type=NAME, ...), 3 steps on 2
    ranks: mmgc's ZeRO was built, the local optimizer is NAME's class holding part of the 6
    parameters on each rank, and every rank's weights equal the unsharded run to 1e-12."""
    local_class = local_optimizer_class(name)
    model = make_model()
    train(model, local_class(model.parameters(), **CONFIGS[name]))
    assert sum(result[name]['held'] for result in zero_results) == 6
    for result in zero_results:
        assert result[name]['zero'] == 'mmgc.dist.zero'
        assert result[name]['local'] == local_class.__name__
        assert 0 < result[name]['held'] < 6
        for n, p in model.named_parameters():
            weights = result[name]['weights'][n]
            assert ((weights - p).norm() / p.norm()).item() <= 1e-12, (name, n)


@pytest.mark.parametrize('scope', [None, 'mmengine', 'mmdet', 'mmpretrain'])
def test_zero_name_resolves_to_mmgc_under_every_scope(scope):
    """type='ZeroRedundancyOptimizer' is mmgc's (a subclass of mmengine's, which it replaces in
    the root registry) whatever the default scope; it finds GC and torch optimizers by name."""
    from mmengine.optim import ZeroRedundancyOptimizer as MMEngineZero
    with DefaultScope.overwrite_default_scope(scope):
        found = OPTIMIZERS.get('ZeroRedundancyOptimizer')
    assert found is mmgc.ZeroRedundancyOptimizer and issubclass(found, MMEngineZero)
    assert local_optimizer_class('SGDGC') is mmgc.SGDGC
    assert local_optimizer_class('mmgc.AdagradGC') is mmgc.AdagradGC
    assert local_optimizer_class('SGD') is torch.optim.SGD
    assert local_optimizer_class(mmgc.AdamWGC) is mmgc.AdamWGC


@pytest.mark.parametrize('bad', ['SGDGc', '', '.', 'mmgc.', 'nosuchscope.SGD',
                                 'ZeroRedundancyOptimizer', 42, torch.nn.Linear])
def test_zero_refuses_what_is_not_an_optimizer(bad):
    """A misspelled or malformed name, ZeRO itself, a number or a module class: one ValueError,
    before any process group is needed."""
    with pytest.raises(ValueError, match='ZeroRedundancyOptimizer: optimizer_type'):
        mmgc.ZeroRedundancyOptimizer(make_model().parameters(), optimizer_type=bad, lr=0.1)


if __name__ == '__main__':
    worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
