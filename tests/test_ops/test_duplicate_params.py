"""A parameter listed twice in one param group (torch warns, then steps it once per listing): GC
centralizes each distinct gradient (or update) once, on the fused and the plain path alike, and
the kernels never take such a group (their threads would step one tensor twice at once).
(centralize_ and centralized_update themselves: tests/test_gc.py.)"""
import warnings
from contextlib import contextmanager

import pytest
import torch

from mmgc import AdamWGC, GCOptimWrapper, SGDGC
from mmgc.gc import gc_applies
from mmgc.ops import cpu_kernels, fused_kernels

STEPS = 3


def phi(t: torch.Tensor) -> torch.Tensor:
    """GC_SPEC's Phi, in float64, for a tensor GC centralizes."""
    return t - t.flatten(1).mean(1).view(-1, *[1] * (t.dim() - 1))


def start_weights() -> list:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=gen, dtype=torch.float64)
            for s in [(6, 3, 3, 3), (6, ), (5, 7)]]


def gradients() -> list:
    gen = torch.Generator().manual_seed(1)
    return [[torch.randn(s, generator=gen, dtype=torch.float64)
             for s in [(6, 3, 3, 3), (6, ), (5, 7)]] for _ in range(STEPS)]


def listed(params: list) -> list:
    """The group as listed: the first weight twice."""
    return [params[0], params[1], params[2], params[0]]


@contextmanager
def duplicates_allowed():
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='.*duplicate parameters')
        yield


def run_gc(make_optimizer, kernels: bool) -> list:
    params = [torch.nn.Parameter(w.clone()) for w in start_weights()]
    with duplicates_allowed():
        optimizer = make_optimizer(listed(params))
    with fused_kernels(kernels):
        for grads in gradients():
            for p, g in zip(params, grads):
                p.grad = g.clone()
            optimizer.step()
    return [p.detach() for p in params]


def run_reference(torch_cls, options: dict, where: str, decay: float = 0.0) -> list:
    """torch's step on the same duplicated group, with each distinct gradient centralized once
    before it (``where='grad'``: ``g - mean(g + decay * w)``), or each distinct parameter's whole
    step centralized once after it (``where='update'``)."""
    params = [torch.nn.Parameter(w.clone()) for w in start_weights()]
    with duplicates_allowed():
        optimizer = torch_cls(listed(params), **options)
    for grads in gradients():
        old = [p.detach().clone() for p in params]
        for p, g in zip(params, grads):
            if where == 'grad' and gc_applies(g):
                g = phi(g + decay * p.detach()) - decay * p.detach()
            p.grad = g.clone()
        optimizer.step()
        if where == 'update':
            with torch.no_grad():
                for p, o in zip(params, old):
                    if gc_applies(p):
                        p.copy_(o + phi(p - o))
    return [p.detach() for p in params]


CASES = {
    'SGDGC': (lambda ps: SGDGC(ps, lr=0.1, momentum=0.9, weight_decay=1e-2),
              torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=1e-2), 'grad', 1e-2),
    'AdamWGC grad': (lambda ps: AdamWGC(ps, lr=0.1, weight_decay=0.1),
                     torch.optim.AdamW, dict(lr=0.1, weight_decay=0.1), 'grad', 0.0),
    'AdamWGC update': (lambda ps: AdamWGC(ps, lr=0.1, weight_decay=0.1, gc_loc='update'),
                       torch.optim.AdamW, dict(lr=0.1, weight_decay=0.1), 'update', 0.0),
    'GCOptimWrapper update': (
        lambda ps: GCOptimWrapper(
            optimizer=torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-2),
            gc_loc='update'),
        torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=1e-2), 'update', 0.0),
}


@pytest.mark.parametrize('kernels', [True, False])
@pytest.mark.parametrize('case', list(CASES))
def test_a_parameter_listed_twice_is_centralized_once(case, kernels):
    make_optimizer, torch_cls, options, where, decay = CASES[case]
    got = run_gc(make_optimizer, kernels)
    expected = run_reference(torch_cls, options, where, decay)
    start = start_weights()
    for g, e, s in zip(got, expected, start):
        assert ((g - e).norm() / e.norm()).item() <= 1e-12, case
        if gc_applies(s) and case != 'AdamWGC grad':  # the whole update is centralized
            torch.testing.assert_close(g.flatten(1).mean(1), s.flatten(1).mean(1),
                                       rtol=0, atol=1e-12)


def test_kernels_refuse_tensors_that_share_memory():
    """The same tensor twice, or two views that overlap, are refused; views of one buffer that do
    not overlap are taken."""
    kernels = cpu_kernels()
    base = torch.randn(12, 5, dtype=torch.float64)
    g = torch.randn(12, 5, dtype=torch.float64)
    same = [base, base]
    overlapping = [base[:8], base[4:]]
    apart = [base[:6], base[6:]]
    for params, taken in ((same, False), (overlapping, False), (apart, True)):
        grads = [g[:p.shape[0]] for p in params]
        before = base.clone()
        assert kernels.gc_sgd_(params, grads, [None] * 2, False, 0.0, 0.0, 0.9, 0.0, 0.1,
                               False, False)[0] == taken
        assert kernels.gc_centralize_([t for t in params], [], 0.0) == taken
        if not taken:
            assert torch.equal(base, before)
    w1, w2, m, v1, v2 = (torch.zeros(12, 5, dtype=torch.float64) for _ in range(5))
    steps = [torch.tensor(0.), torch.tensor(0.)]
    assert not kernels.gc_adam_([w1, w2], [g, g], [m, m], [v1, v2], steps, False, 0.1, 0.9,
                                0.999, 1e-8, 0.0, True, False, False)      # one exp_avg twice
    assert kernels.gc_adam_([w1, w2], [g, g], [m, m.clone()], [v1, v2], steps, False, 0.1, 0.9,
                            0.999, 1e-8, 0.0, True, False, False)
