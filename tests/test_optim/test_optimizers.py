"""The five GC optimizers against GC_SPEC (reference.py), torch, and their own state dicts."""
import copy

import pytest
import torch

from mmgc import SGDGC, SGDWGC, AdagradGC, AdamGC, AdamWGC
from mmgc.gc import gc_applies
from mmgc.ops import fused_kernels

from ..test_gc import SHAPES, slice_means
from .reference import ReferenceOptimizer

GC_OPTIMIZERS = {cls.__name__: cls for cls in (SGDGC, SGDWGC, AdamGC, AdamWGC, AdagradGC)}
TORCH_TWIN = {'SGDGC': torch.optim.SGD, 'AdamGC': torch.optim.Adam,
              'AdamWGC': torch.optim.AdamW, 'AdagradGC': torch.optim.Adagrad}

# (optimizer, hyperparameters, GC options): every option GC_SPEC names, per optimizer.
CASES = [
    ('SGDGC', dict(lr=0.1), {}),
    ('SGDGC', dict(lr=0.05, momentum=0.9, weight_decay=1e-2), {}),
    ('SGDGC', dict(lr=0.05, momentum=0.9, weight_decay=1e-2, nesterov=True), {}),
    ('SGDGC', dict(lr=0.05, momentum=0.9, dampening=0.2, weight_decay=1e-2), {}),
    ('SGDGC', dict(lr=0.05, momentum=0.9, weight_decay=1e-2, maximize=True), {}),
    ('SGDGC', dict(lr=0.05, momentum=0.9, weight_decay=1e-2), dict(gc_conv_only=True)),
    ('SGDWGC', dict(lr=0.05, momentum=0.9, weight_decay=5e-2), {}),
    ('SGDWGC', dict(lr=0.05, momentum=0.9, weight_decay=5e-2, nesterov=True),
     dict(gc_conv_only=True)),
    ('AdamGC', dict(lr=1e-2, weight_decay=1e-2), {}),
    ('AdamGC', dict(lr=1e-2, weight_decay=1e-2), dict(gc_loc='update')),
    ('AdamGC', dict(lr=1e-2, weight_decay=1e-2, amsgrad=True, maximize=True), {}),
    ('AdamGC', dict(lr=1e-2, betas=(0.8, 0.99), amsgrad=True), dict(gc_loc=False)),
    ('AdamWGC', dict(lr=1e-2, weight_decay=0.1), {}),
    ('AdamWGC', dict(lr=1e-2, weight_decay=0.1), dict(gc_loc='update')),
    ('AdamWGC', dict(lr=1e-2, weight_decay=0.1, amsgrad=True), dict(gc_loc='update',
                                                                   gc_conv_only=True)),
    ('AdagradGC', dict(lr=0.1, weight_decay=1e-2), {}),
    ('AdagradGC', dict(lr=0.1, weight_decay=1e-2, lr_decay=0.01,
                       initial_accumulator_value=0.1), dict(gc_loc='update')),
    ('AdagradGC', dict(lr=0.1, weight_decay=1e-2, maximize=True), dict(gc_loc=True)),
]
IMPLEMENTATIONS = [dict(foreach=False), dict(foreach=True), dict(fused=True)]


def case_id(case):
    name, hyper, gc = case
    return '-'.join([name] + [f'{k}={v}' for k, v in {**hyper, **gc}.items()])


def make_params(seed=0):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen, dtype=torch.float64) + 0.5 for s in SHAPES]
    # One conv weight in channels_last, as a model converted with .to(memory_format=...) has.
    params[0] = params[0].to(memory_format=torch.channels_last)
    return [torch.nn.Parameter(p) for p in params]


def gradients(step, seed=100):
    gen = torch.Generator().manual_seed(seed + step)
    return [torch.randn(s, generator=gen, dtype=torch.float64) * 2 + 0.3 for s in SHAPES]


def set_grads(params, step):
    """Gradients as autograd makes them: in each parameter's memory layout."""
    for p, g in zip(params, gradients(step)):
        p.grad = torch.empty_like(p).copy_(g)


def run(optimizer, params, steps, start=0):
    for step in range(start, start + steps):
        set_grads(params, step)
        optimizer.step()


def relative_error(a, b):
    return ((a - b).norm() / b.norm()).item()


def normalized_loc(gc):
    loc = gc.get('gc_loc', 'grad')
    return {True: 'grad', False: 'update'}.get(loc, loc)


@pytest.mark.parametrize('kernels', [True, False], ids=['fused-kernels', 'plain-path'])
@pytest.mark.parametrize('impl', IMPLEMENTATIONS, ids=lambda d: next(iter(d)))
@pytest.mark.parametrize('case', CASES, ids=case_id)
def test_matches_gc_spec(case, impl, kernels):
    name, hyper, gc = case
    params = make_params()
    ref_params = [p.detach().clone() for p in params]
    optimizer = GC_OPTIMIZERS[name](params, **hyper, **gc, **impl)
    reference = ReferenceOptimizer(name, ref_params, **hyper, gc_conv_only=gc.get(
        'gc_conv_only', False), gc_loc=normalized_loc(gc))
    for step in range(25):
        set_grads(params, step)
        with fused_kernels(kernels):
            optimizer.step()
        reference.step(gradients(step))
    for p, r in zip(params, ref_params):
        assert relative_error(p.detach(), r) <= 1e-10


@pytest.mark.parametrize('impl', IMPLEMENTATIONS, ids=lambda d: next(iter(d)))
@pytest.mark.parametrize('case', CASES, ids=case_id)
def test_gc_off_is_the_torch_optimizer(case, impl):
    name, hyper, gc = case
    params = make_params()
    ref_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    optimizer = GC_OPTIMIZERS[name](params, **hyper, **gc, **impl, use_gc=False)
    if name == 'SGDWGC':  # torch has no SGDW: compare with the reference with GC off
        reference = ReferenceOptimizer(name, [p.detach() for p in ref_params], **hyper,
                                       use_gc=False)
        for step in range(10):
            run(optimizer, params, 1, step)
            reference.step(gradients(step))
        for p, r in zip(params, ref_params):
            assert relative_error(p.detach(), r.detach()) <= 1e-12
        return
    twin = TORCH_TWIN[name](ref_params, **hyper, **impl)
    for step in range(10):
        run(optimizer, params, 1, step)
        run(twin, ref_params, 1, step)
        for p, r in zip(params, ref_params):
            assert torch.equal(p, r)


def test_a_use_gc_false_group_is_the_torch_optimizer():
    params, twin_params = make_params(), [torch.nn.Parameter(p.detach().clone())
                                          for p in make_params()]
    optimizer = SGDGC([dict(params=params[:2]), dict(params=params[2:], use_gc=False)],
                      lr=0.1, momentum=0.9, weight_decay=1e-2)
    twin = torch.optim.SGD(twin_params, lr=0.1, momentum=0.9, weight_decay=1e-2)
    run(optimizer, params, 5)
    run(twin, twin_params, 5)
    for p, t in zip(params[2:], twin_params[2:]):
        assert torch.equal(p, t)
    for p, t in zip(params[:2], twin_params[:2]):
        assert not torch.allclose(p, t)


MEAN_PRESERVING = [
    ('SGDGC', dict(lr=0.05, momentum=0.9, weight_decay=1e-2), {}),
    ('SGDGC', dict(lr=0.05, momentum=0.9, weight_decay=1e-2, nesterov=True), {}),
    ('SGDGC', dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=1e-2), {}),
    ('AdamGC', dict(lr=1e-2, weight_decay=1e-2), dict(gc_loc='update')),
    ('AdamWGC', dict(lr=1e-2, weight_decay=0.1), dict(gc_loc='update')),
    ('AdagradGC', dict(lr=0.1, weight_decay=1e-2), dict(gc_loc='update')),
]


@pytest.mark.parametrize('case', MEAN_PRESERVING, ids=case_id)
def test_weight_vector_means_never_move(case):
    """e^T w_t = e^T w_0 for every slice (Eq. 4), wherever GC_SPEC says so."""
    name, hyper, gc = case
    params = make_params()
    matrices = [p for p in params if p.dim() > 1]
    before = [slice_means(p.detach()) for p in matrices]
    optimizer = GC_OPTIMIZERS[name](params, **hyper, **gc)
    run(optimizer, params, 50)
    for p, b in zip(matrices, before):
        moved = (slice_means(p.detach()) - b).abs().max()
        if gc_applies(p):
            assert moved < 1e-12
        else:
            assert moved > 1e-6  # M == 1 slices are left to the plain optimizer


@pytest.mark.parametrize('case', CASES, ids=case_id)
def test_state_dict_round_trip(case):
    """K steps, save, load into a fresh optimizer, K more == 2K straight."""
    name, hyper, gc = case
    cls = GC_OPTIMIZERS[name]
    straight_params = make_params()
    straight = cls(straight_params, **hyper, **gc)
    run(straight, straight_params, 10)

    params = make_params()
    first = cls(params, **hyper, **gc)
    run(first, params, 5)
    saved = copy.deepcopy(first.state_dict())
    resumed_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    resumed = cls(resumed_params, lr=1.0)  # hyperparameters come from the state dict
    resumed.load_state_dict(saved)
    run(resumed, resumed_params, 5, start=5)
    for p, s in zip(resumed_params, straight_params):
        assert torch.equal(p, s)


@pytest.mark.parametrize('torch_cls,gc_cls,hyper', [
    (torch.optim.SGD, SGDGC, dict(lr=0.05, momentum=0.9, weight_decay=1e-2)),
    (torch.optim.AdamW, AdamWGC, dict(lr=1e-2, weight_decay=0.1)),
])
def test_torch_state_dict_loads_into_gc_optimizer_and_back(torch_cls, gc_cls, hyper):
    # torch -> GC: the GC optimizer continues exactly where torch was (GC off here, to compare).
    straight_params = make_params()
    straight = torch_cls(straight_params, **hyper)
    run(straight, straight_params, 10)

    params = make_params()
    plain = torch_cls(params, **hyper)
    run(plain, params, 5)
    gc_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    gc_optimizer = gc_cls(gc_params, lr=1.0, use_gc=False)
    gc_optimizer.load_state_dict(copy.deepcopy(plain.state_dict()))
    assert gc_optimizer.param_groups[0]['use_gc'] is False
    run(gc_optimizer, gc_params, 5, start=5)
    for p, s in zip(gc_params, straight_params):
        assert torch.equal(p, s)

    # A torch checkpoint switched to GC needs no conversion: its groups take the GC defaults.
    switched = gc_cls(make_params(), lr=1.0)
    switched.load_state_dict(copy.deepcopy(plain.state_dict()))
    assert switched.param_groups[0]['use_gc'] is True
    assert switched.param_groups[0]['lr'] == hyper['lr']

    # GC -> torch: torch continues exactly as the GC optimizer would.
    back_params = [torch.nn.Parameter(p.detach().clone()) for p in gc_params]
    back = torch_cls(back_params, lr=1.0)
    back.load_state_dict(copy.deepcopy(gc_optimizer.state_dict()))
    run(back, back_params, 3, start=10)
    run(gc_optimizer, gc_params, 3, start=10)
    for p, b in zip(gc_params, back_params):
        assert torch.equal(p, b)


def test_closure_is_evaluated_before_centralizing():
    w = torch.nn.Parameter(torch.randn(4, 6, dtype=torch.float64))
    x = torch.randn(6, dtype=torch.float64)
    optimizer = SGDGC([w], lr=0.1)

    def closure():
        optimizer.zero_grad()
        loss = (w @ x).pow(2).sum()
        loss.backward()
        return loss

    w0 = w.detach().clone()
    loss = optimizer.step(closure)
    assert loss.item() > 0
    step = w.detach() - w0
    assert step.abs().max() > 0
    assert slice_means(step).abs().max() < 1e-14


def test_params_without_grad_are_skipped():
    with_grad, without = make_params()[:2]
    optimizer = AdamGC([with_grad, without], lr=0.1)
    before = without.detach().clone()
    with_grad.grad = torch.randn_like(with_grad)
    optimizer.step()
    assert torch.equal(without, before)


def test_sparse_gradient_is_refused_with_the_parameter_shape():
    embedding = torch.nn.Embedding(10, 3, sparse=True)
    optimizer = SGDGC(embedding.parameters(), lr=0.1)
    embedding(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(ValueError, match=r'sparse.*\(10, 3\)'):
        optimizer.step()


@pytest.mark.parametrize('kernels', [True, False], ids=['fused-kernels', 'plain-path'])
@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_a_non_finite_gradient_value_spreads_to_its_slice_only(bad, kernels):
    """As README says: the slice mean of a slice with a NaN / Inf value is not finite, so GC
    makes that whole output channel non-finite (torch alone: that one weight); other slices and
    tensors stay finite."""
    params = make_params()
    optimizer = SGDGC(params, lr=0.1, momentum=0.9)
    set_grads(params, 0)
    params[0].grad[1, 0, 0, 0] = bad
    with fused_kernels(kernels):
        optimizer.step()
    finite = torch.isfinite(params[0].detach())
    assert not finite[1].any()
    assert finite[0].all() and finite[2:].all()
    assert all(torch.isfinite(p.detach()).all() for p in params[1:])
