"""Which param groups the fused CPU kernels take (all of a group or none of it), and how the
rest of the step (torch's own) is run or skipped."""
import pytest
import torch

from mmgc import AdamWGC, SGDGC
from mmgc.ops import fused_kernels

OPTIMIZERS = [(SGDGC, dict(lr=0.1, momentum=0.9, weight_decay=1e-2)),
              (AdamWGC, dict(lr=0.1, weight_decay=1e-2))]


def step_twins(cls, options, make_groups, steps=3):
    """The same steps on the fused path (as chosen by the optimizer) and on the plain path."""
    results = []
    for fast in (True, False):
        groups = make_groups()
        optimizer = cls(groups, **options)
        gen = torch.Generator().manual_seed(0)
        with fused_kernels(fast):
            for _ in range(steps):
                for group in groups:
                    for p in group['params']:
                        p.grad = torch.randn(p.shape, generator=gen).to(p.dtype)
                optimizer.step()
        results.append((optimizer, [p for g in groups for p in g['params']]))
    return results


@pytest.mark.parametrize('cls,options', OPTIMIZERS)
@pytest.mark.parametrize('odd', ['float16', 'gaps'])
def test_one_unsupported_tensor_sends_its_group_to_the_plain_path(cls, options, odd):
    def make_groups():
        gen = torch.Generator().manual_seed(1)
        plain = [torch.nn.Parameter(torch.randn(8, 3, 3, 3, generator=gen)),
                 torch.nn.Parameter(torch.randn(8, generator=gen))]
        if odd == 'float16':
            other = torch.nn.Parameter(torch.randn(4, 6, generator=gen).half())
        else:  # every other column of a matrix: a weight with gaps in memory
            other = torch.nn.Parameter(torch.randn(4, 12, generator=gen)[:, ::2])
        return [dict(params=plain + [other])]

    (fast, fast_params), (plain, plain_params) = step_twins(cls, options, make_groups)
    assert fast._fused_step() == []                   # the kernel refuses the group ...
    for f, p in zip(fast_params, plain_params):       # ... and nothing was stepped twice
        # (the same steps; the means may be summed by centralize_'s kernel or by torch)
        assert ((f - p).norm() / p.norm()).item() <= 1e-6


@pytest.mark.parametrize('cls,options', OPTIMIZERS)
def test_torch_step_runs_only_for_what_the_kernels_left(cls, options, monkeypatch):
    gen = torch.Generator().manual_seed(2)
    fused = [torch.nn.Parameter(torch.randn(6, 4, generator=gen)),
             torch.nn.Parameter(torch.randn(6, generator=gen))]
    other = [torch.nn.Parameter(torch.randn(6, 4, generator=gen))]
    optimizer = cls([dict(params=fused), dict(params=other, use_gc=False)], **options)
    calls = []
    torch_step = optimizer._torch_step
    monkeypatch.setattr(optimizer, '_torch_step', lambda: calls.append(1) or torch_step())
    for p in fused + other:
        p.grad = torch.randn(p.shape, generator=gen)
    optimizer.step()
    assert calls == [1]                   # the use_gc=False group needs torch's step
    other[0].grad = None
    optimizer.step()
    assert calls == [1]                   # the kernel took every parameter with a gradient


@pytest.mark.parametrize('cls,options', OPTIMIZERS)
def test_a_group_without_gc_is_torch_exactly(cls, options):
    torch_cls = cls._torch_optimizer
    gen = torch.Generator().manual_seed(3)
    weights = [torch.randn(6, 4, generator=gen), torch.randn(6, generator=gen)]
    grads = [[torch.randn(w.shape, generator=gen) for w in weights] for _ in range(3)]
    gc_params = [torch.nn.Parameter(w.clone()) for w in weights]
    torch_params = [torch.nn.Parameter(w.clone()) for w in weights]
    extra = torch.nn.Parameter(torch.randn(5, 5, generator=gen))  # a fused group beside it
    gc_optimizer = cls([dict(params=gc_params, use_gc=False), dict(params=[extra])], **options)
    torch_optimizer = torch_cls(torch_params, **options)
    for step_grads in grads:
        for p, q, g in zip(gc_params, torch_params, step_grads):
            p.grad, q.grad = g.clone(), g.clone()
        extra.grad = torch.randn(5, 5, generator=gen)
        gc_optimizer.step()
        torch_optimizer.step()
    for p, q in zip(gc_params, torch_params):
        assert torch.equal(p, q)


def test_float32_and_float64_weights_in_one_adam_group():
    def make_groups():
        gen = torch.Generator().manual_seed(4)
        return [dict(params=[torch.nn.Parameter(torch.randn(6, 5, generator=gen).to(dtype))
                             for dtype in (torch.float32, torch.float64, torch.float32)])]

    (_, fast_params), (_, plain_params) = step_twins(AdamWGC, dict(lr=0.1, weight_decay=0.1),
                                                        make_groups)
    for f, p in zip(fast_params, plain_params):
        torch.testing.assert_close(f, p)
        assert f.dtype == p.dtype
    groups = make_groups()
    for p in groups[0]['params']:
        p.grad = torch.ones_like(p)
    assert AdamWGC(groups, lr=0.1)._fused_step() == groups[0]['params']


@pytest.mark.parametrize('cls,options', OPTIMIZERS)
def test_results_do_not_depend_on_the_thread_count(cls, options, monkeypatch):
    """The threads take blocks of whole rows from a queue, in whatever order they come to them;
    each row's mean is still taken by one thread, so the step is the same to the bit."""
    def make_params():
        gen = torch.Generator().manual_seed(5)
        shapes = [(300, 1000), (64, 3, 7, 7), (7, ), (3, 70000), (130000, ), (16, 8)]
        return [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]

    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            params = make_params()
            optimizer = cls(params, **options)
            monkeypatch.setattr(optimizer, '_torch_step', lambda: pytest.fail('plain path'))
            gen = torch.Generator().manual_seed(6)
            for _ in range(3):
                for p in params:
                    p.grad = torch.randn(p.shape, generator=gen)
                optimizer.step()
            results.append(params)
    finally:
        torch.set_num_threads(threads)
    for params in results[1:]:
        for p, q in zip(params, results[0]):
            assert torch.equal(p, q)
