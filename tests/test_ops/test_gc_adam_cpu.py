"""The fused CPU Adam(W) kernel (mmgc/ops) against the plain path: GC, then torch's own step."""
import copy
import itertools

import pytest
import torch

from mmgc import AdamGC, AdamWGC
from mmgc.ops import fused_kernels

from .paths import random_params, run

OPTIONS = [
    (AdamGC, dict(lr=0.05)),
    (AdamGC, dict(lr=0.05, weight_decay=1e-2)),
    (AdamGC, dict(lr=0.05, weight_decay=1e-2, gc_loc='update', betas=(0.8, 0.99))),
    (AdamGC, dict(lr=0.05, weight_decay=1e-2, decoupled_weight_decay=True, maximize=True)),
    (AdamWGC, dict(lr=0.05, weight_decay=1e-1)),
    (AdamWGC, dict(lr=0.05, weight_decay=1e-1, gc_loc='update')),
    (AdamWGC, dict(lr=0.05, weight_decay=1e-1, gc_loc='update', maximize=True, eps=1e-3)),
    (AdamWGC, dict(lr=0.05, weight_decay=1e-1, fused=True)),
    (AdamWGC, dict(lr=torch.tensor(0.05), weight_decay=1e-1, foreach=False)),
    (AdamWGC, dict(lr=0.05, weight_decay=1e-1, gc_conv_only=True, gc_loc='update')),
]


def assert_paths_agree(cls, options, dtype, seed, tolerance):
    fast = random_params(seed, dtype)
    plain = [torch.nn.Parameter(p.detach().clone()) for p in fast]
    fast_optimizer = run(cls, options, fast, True, seed=seed)
    plain_optimizer = run(cls, options, plain, False, seed=seed)
    for f, p in zip(fast, plain):
        assert f.stride() == p.stride()
        assert ((f - p).norm() / p.norm()).item() <= tolerance
        fast_state, plain_state = fast_optimizer.state[f], plain_optimizer.state[p]
        assert fast_state.keys() == plain_state.keys()
        assert fast_state['step'].dtype == plain_state['step'].dtype
        assert fast_state['step'].device == plain_state['step'].device
        assert fast_state['step'].item() == plain_state['step'].item() == 6
        for key in ('exp_avg', 'exp_avg_sq'):
            assert fast_state[key].stride() == plain_state[key].stride()
            diff = (fast_state[key] - plain_state[key]).norm() / plain_state[key].norm()
            assert diff.item() <= tolerance


@pytest.mark.parametrize('cls,options,seed',
                         [(cls, options, seed)
                          for (cls, options), seed in itertools.product(OPTIONS, range(2))])
def test_fast_and_plain_paths_agree_float32(cls, options, seed):
    assert_paths_agree(cls, options, torch.float32, seed, tolerance=1e-6)


@pytest.mark.parametrize('cls,options', OPTIONS[1:3] + OPTIONS[5:6])
def test_fast_and_plain_paths_agree_float64(cls, options):
    assert_paths_agree(cls, options, torch.float64, 0, tolerance=1e-12)


@pytest.mark.parametrize('cls,options', OPTIONS[2:3] + OPTIONS[4:7])
def test_fast_path_is_as_accurate_as_the_plain_one(cls, options):
    """Against the same steps in float64, the fused float32 step errs no more than torch's."""
    fast = random_params(1, torch.float32)
    start = [p.detach().double() for p in fast]
    plain = [torch.nn.Parameter(p.detach().clone()) for p in fast]
    exact = [torch.nn.Parameter(p.detach().double()) for p in fast]
    run(cls, options, fast, True, seed=1)
    run(cls, options, plain, False, seed=1)
    run(cls, options, exact, False, seed=1)
    for f, p, e, s in zip(fast, plain, exact, start):
        step = (e - s).norm()
        fast_error = (f.double() - e).norm() / step
        plain_error = (p.double() - e).norm() / step
        assert fast_error <= 2 * plain_error + 1e-6


def test_amsgrad_takes_the_plain_path():
    w = torch.nn.Parameter(torch.randn(8, 5))
    w.grad = torch.randn(8, 5)
    optimizer = AdamWGC([w], lr=0.1, amsgrad=True)
    assert optimizer._fused_step() == []
    optimizer.step()
    assert 'max_exp_avg_sq' in optimizer.state[w]


def test_a_torch_adamw_checkpoint_resumes_on_the_fast_path():
    """The fast path reads and writes the state torch's AdamW keeps, and counts its steps."""
    gen = torch.Generator().manual_seed(5)
    w = torch.nn.Parameter(torch.randn(16, 4, 3, 3, generator=gen))
    grads = [torch.randn(16, 4, 3, 3, generator=gen) for _ in range(4)]
    torch_adamw = torch.optim.AdamW([w], lr=0.01, weight_decay=0.1)
    for grad in grads[:2]:
        w.grad = grad.clone()
        torch_adamw.step()
    results = []
    for fast in (True, False):
        p = torch.nn.Parameter(w.detach().clone())
        optimizer = AdamWGC([p], lr=0.01, weight_decay=0.1, gc_loc='update')
        optimizer.load_state_dict(copy.deepcopy(torch_adamw.state_dict()))
        with fused_kernels(fast):
            for grad in grads[2:]:
                p.grad = grad.clone()
                optimizer.step()
        assert optimizer.state[p]['step'].item() == 4
        results.append(p.detach())
    torch.testing.assert_close(results[0], results[1], rtol=1e-6, atol=1e-7)
    # gc_loc='update': each weight vector's mean is where the torch steps left it.
    torch.testing.assert_close(results[0].mean(dim=(1, 2, 3)), w.detach().mean(dim=(1, 2, 3)),
                               rtol=0, atol=1e-6)


def test_kernel_step_is_visible_to_autograd():
    w = torch.nn.Parameter(torch.randn(6, 5))
    w.grad = torch.randn(6, 5)
    version = w._version
    optimizer = AdamWGC([w], lr=0.1)
    assert optimizer._fused_step() == [w]
    assert w._version > version
    assert optimizer.state[w]['exp_avg']._version > 0
    assert optimizer.state[w]['exp_avg_sq']._version > 0
