"""The fused CPU kernel (mmgc/ops) against the plain path: GC with mmgc.gc, then torch's step."""
import itertools

import pytest
import torch

from mmgc import SGDGC, SGDWGC
from mmgc.ops import cpu_kernels, fused_kernels

from .paths import SGD_OPTIONS as OPTIONS
from .paths import random_params, run



def test_the_kernels_build_here():
    """CI's machine has a compiler: the fast path must be what the other tests exercise."""
    assert cpu_kernels() is not None


@pytest.mark.parametrize('cls,options,seed', [
    (cls, options, seed)
    for cls, options, seed in itertools.product((SGDGC, SGDWGC), OPTIONS, range(2))
])
def test_fast_and_plain_paths_agree_float32(cls, options, seed):
    fast = random_params(seed, torch.float32)
    plain = [torch.nn.Parameter(p.detach().clone()) for p in fast]
    fast_optimizer = run(cls, options, fast, True, seed=seed)
    plain_optimizer = run(cls, options, plain, False, seed=seed)
    for f, p in zip(fast, plain):
        assert f.stride() == p.stride()
        assert ((f - p).norm() / p.norm()).item() <= 1e-6
    if options.get('momentum'):
        for f, p in zip(fast, plain):
            fb = fast_optimizer.state[f]['momentum_buffer']
            pb = plain_optimizer.state[p]['momentum_buffer']
            assert ((fb - pb).norm() / pb.norm()).item() <= 1e-6


def test_gradient_in_another_layout_takes_the_plain_path():
    w = torch.nn.Parameter(torch.randn(8, 4, 3, 3).to(memory_format=torch.channels_last))
    twin = torch.nn.Parameter(w.detach().clone())
    grad = torch.randn(8, 4, 3, 3)                     # contiguous, unlike w
    for p, fast in ((w, True), (twin, False)):
        optimizer = SGDGC([p], lr=0.1, momentum=0.9)
        with fused_kernels(fast):
            for _ in range(3):
                p.grad = grad.clone()
                optimizer.step()
    torch.testing.assert_close(w, twin)


def test_kernel_step_is_visible_to_autograd():
    w = torch.nn.Parameter(torch.randn(6, 5))
    w.grad = torch.randn(6, 5)
    version = w._version
    optimizer = SGDGC([w], lr=0.1, momentum=0.9)
    optimizer.step()
    assert w._version > version
    assert optimizer.state[w]['momentum_buffer']._version > 0


def test_gradients_are_left_as_they_were_on_the_fast_path():
    w = torch.nn.Parameter(torch.randn(6, 5))
    grad = torch.randn(6, 5)
    w.grad = grad.clone()
    SGDGC([w], lr=0.1).step()
    assert torch.equal(w.grad, grad)


def test_float32_and_float64_weights_in_one_group():
    gen = torch.Generator().manual_seed(3)
    params = [torch.nn.Parameter(torch.randn(6, 5, dtype=dtype, generator=gen))
              for dtype in (torch.float32, torch.float64, torch.float32)]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    for ps, fast in ((params, True), (twins, False)):
        optimizer = SGDGC(ps, lr=0.1, momentum=0.9, weight_decay=1e-2)
        with fused_kernels(fast):
            for step in range(3):
                for p in ps:
                    p.grad = torch.full_like(p, 0.5) + torch.arange(5, dtype=p.dtype) * step
                optimizer.step()
    for p, t in zip(params, twins):
        torch.testing.assert_close(p, t)
