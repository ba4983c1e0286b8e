"""What the compiled kernels cannot take goes to the plain path before any native code runs, and
the native code refuses it too: tensor subclasses (a ``__torch_dispatch__`` wrapper without memory
of its own, as DTensor; a plain Python subclass), meta tensors, sparse gradients; and the native
code refuses negative views (the sign is a flag, not in memory).

A kernel that touched the memory of a wrapper subclass used to end the process (std::terminate),
so the wrapper checks run in a fresh interpreter, where an abort shows as a negative exit code:
``python test_tensor_subclasses.py wrapper`` runs them.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._pytree import tree_map

import mmgc.ops
from mmgc import AdamWGC, SGDGC
from mmgc.gc import centralize_
from mmgc.ops import cpu_kernels, fused_kernels

ROOT = Path(__file__).resolve().parents[2]
OPTIMIZERS = [(SGDGC, dict(lr=0.1, momentum=0.9, weight_decay=1e-2)),
              (AdamWGC, dict(lr=0.1, weight_decay=1e-1)),
              (AdamWGC, dict(lr=0.1, weight_decay=1e-1, gc_loc='update'))]
SHAPES = [(6, 3, 3, 3), (6, ), (5, 7)]


class Wrapper(torch.Tensor):
    """A ``__torch_dispatch__`` wrapper subclass: no memory of its own (as DTensor), every op runs
    on the plain tensor it holds."""

    @staticmethod
    def __new__(cls, inner: torch.Tensor) -> 'Wrapper':
        return torch.Tensor._make_wrapper_subclass(
            cls, inner.shape, strides=inner.stride(), dtype=inner.dtype, device=inner.device,
            requires_grad=inner.requires_grad)

    def __init__(self, inner: torch.Tensor) -> None:
        self.inner = inner

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        wrappers = {}

        def unwrap(x):
            if isinstance(x, Wrapper):
                wrappers[id(x.inner)] = x
                return x.inner
            return x

        out = func(*tree_map(unwrap, args), **tree_map(unwrap, kwargs or {}))
        # in-place ops return their input: give back the same wrapper
        return tree_map(lambda x: wrappers.get(id(x), Wrapper(x))
                        if type(x) is torch.Tensor else x, out)


class Sub(torch.Tensor):
    """A plain Python subclass (``__torch_function__`` only): it has memory, but expects to see
    the operations run on it."""


KINDS = {
    'wrapper': (Wrapper, lambda t: t.inner),
    'subclass': (lambda t: t.as_subclass(Sub), lambda t: t.as_subclass(torch.Tensor)),
    'negative view': (lambda t: torch._neg_view(t.neg()), lambda t: t.resolve_neg()),
}


class KernelSpy:
    """Records each kernel call: the tensor types it received, whether one of them was a negative
    view, and whether the kernel took the call."""

    def __init__(self, module) -> None:
        self.module = module
        self.calls = []

    def __getattr__(self, name):
        kernel = getattr(self.module, name)

        def call(*args):
            tensors = [t for a in args if isinstance(a, (list, tuple)) for t in a
                       if isinstance(t, torch.Tensor)]
            result = kernel(*args)
            taken = result[0] if isinstance(result, tuple) else result
            self.calls.append((name, {type(t) for t in tensors},
                               any(t.is_neg() for t in tensors), taken))
            return result

        return call

    def check(self) -> None:
        """No subclass reached a kernel (the Python checks stop them), and no kernel took a
        negative view (the native checks refuse it)."""
        for name, types, negative, taken in self.calls:
            assert types <= {torch.Tensor, torch.nn.Parameter}, (name, types)
            assert not (negative and taken), name


def spy_on_kernels() -> KernelSpy:
    kernels = cpu_kernels()
    assert kernels is not None, 'the kernels must be built for these checks'
    spy = KernelSpy(kernels)
    mmgc.ops._state['module'] = spy
    return spy


def restore_kernels(spy: KernelSpy) -> None:
    mmgc.ops._state['module'] = spy.module


def random_tensors(seed: int, dtype: torch.dtype = torch.float64) -> list:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=dtype) for s in SHAPES]


def steps(cls, options, params, grads_of_step) -> None:
    optimizer = cls(params, **options)
    for grads in grads_of_step:
        for p, g in zip(params, grads):
            p.grad = g
        optimizer.step()


def check_optimizers(kind: str) -> None:
    """3 steps on params (and gradients) of this kind with the kernels on: as the plain path on
    plain float64 tensors, and no kernel ever saw a tensor of this kind."""
    make, plain = KINDS[kind]
    for cls, options in OPTIMIZERS:
        start = random_tensors(0)
        grads = [random_tensors(seed) for seed in (1, 2, 3)]
        reference = [torch.nn.Parameter(t.clone()) for t in start]
        with fused_kernels(False):
            steps(cls, options, reference, [[g.clone() for g in gs] for gs in grads])
        params = [torch.nn.Parameter(make(t.clone())) for t in start]
        spy = spy_on_kernels()
        try:
            steps(cls, options, params, [[make(g.clone()) for g in gs] for gs in grads])
        finally:
            restore_kernels(spy)
        spy.check()
        for p, r in zip(params, reference):
            got = plain(p.detach())
            assert type(got) is torch.Tensor
            assert ((got - r).norm() / r.norm()).item() <= 1e-12, (cls.__name__, options)


def check_centralize(kind: str) -> None:
    make, plain = KINDS[kind]
    for decay in (0.0, 0.3):
        tensors, params = random_tensors(4), random_tensors(5)
        expected = [t.clone() for t in tensors]
        centralize_(expected, params=params, decay=decay, fast=False)
        made = [make(t.clone()) for t in tensors]
        spy = spy_on_kernels()
        try:
            centralize_(made, params=[make(p) for p in params], decay=decay)
        finally:
            restore_kernels(spy)
        spy.check()
        for m, e in zip(made, expected):
            torch.testing.assert_close(plain(m), e, rtol=1e-12, atol=1e-12)


def check_kernels_refuse(kind: str) -> None:
    """Called directly (past the Python checks), the kernels refuse the group and change
    nothing."""
    make, plain = KINDS[kind]
    kernels = cpu_kernels()
    w, g, m, v = (make(torch.randn(6, 5, dtype=torch.float64)) for _ in range(4))
    before = [plain(t).clone() for t in (w, g, m, v)]
    step = torch.tensor(0.0)
    assert kernels.gc_sgd_([w], [g], [None], False, 0.0, 0.0, 0.9, 0.0, 0.1, False, False) == \
        (False, [])
    assert kernels.gc_sgd_([w], [g], [m], False, 1e-2, 0.0, 0.9, 0.0, 0.1, True, False) == \
        (False, [])
    for update in (False, True):
        assert not kernels.gc_adam_([w], [g], [m], [v], [step], False, 0.1, 0.9, 0.999, 1e-8,
                                    0.1, True, False, update)
    assert not kernels.gc_centralize_([g], [], 0.0)
    assert not kernels.gc_centralize_([g], [w], 0.5)
    assert step.item() == 0
    for t, b in zip((w, g, m, v), before):
        assert torch.equal(plain(t), b)


def test_wrapper_subclass_in_a_fresh_process():
    """A ``__torch_dispatch__`` wrapper (no memory, as DTensor): SGDGC, AdamWGC (both gc_loc)
    and centralize_ take the plain path; the kernels, called directly, refuse it."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), MMGC_FUSED_KERNELS='1')
    run = subprocess.run([sys.executable, __file__, 'wrapper'], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    # an abort in native code shows as a negative return code (-6: SIGABRT)
    assert run.returncode == 0, f'exit code {run.returncode}:\n{run.stderr[-3000:]}'
    assert 'wrapper: all checks passed' in run.stdout


def test_python_subclass_takes_the_plain_path():
    check_optimizers('subclass')
    check_centralize('subclass')


def test_kernels_refuse_a_negative_view():
    """Its values are the negated memory: a kernel reading the memory would step backwards.
    (torch's own grouped ops refuse such a tensor too, so the plain path raises torch's error.)"""
    check_kernels_refuse('negative view')


def test_meta_tensors_take_the_plain_path():
    for cls, options in OPTIMIZERS:
        params = [torch.nn.Parameter(torch.empty(s, device='meta')) for s in SHAPES]
        spy = spy_on_kernels()
        try:
            steps(cls, options, params, [[torch.empty(s, device='meta') for s in SHAPES]] * 2)
            centralize_([p.grad for p in params])
        finally:
            restore_kernels(spy)
        assert spy.calls == []
        assert all(p.is_meta and p.shape == s for p, s in zip(params, SHAPES))
    assert not cpu_kernels().gc_centralize_([torch.empty(4, 3, device='meta')], [], 0.0)


def test_sparse_gradients_take_the_plain_path():
    """An embedding with sparse gradients: GC refuses to centralize it (ValueError), a group that
    does not centralize it steps as torch (SGD) or fails as torch (AdamW), never in a kernel."""
    def embedding():
        layer = torch.nn.Embedding(10, 4, sparse=True)
        with torch.no_grad():
            layer.weight.copy_(torch.arange(40.).view(10, 4) / 7)
        layer(torch.tensor([1, 2, 2, 7])).pow(2).sum().backward()
        return layer

    spy = spy_on_kernels()
    try:
        layer = embedding()
        with pytest.raises(ValueError, match='sparse'):
            SGDGC(layer.parameters(), lr=0.1, momentum=0.9).step()
        layer, twin = embedding(), embedding()
        SGDGC(layer.parameters(), lr=0.1, momentum=0.9, gc_conv_only=True).step()
        torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9).step()
        assert torch.equal(layer.weight, twin.weight)
        with pytest.raises(RuntimeError, match='sparse'):
            AdamWGC(embedding().parameters(), lr=0.1, gc_conv_only=True).step()
    finally:
        restore_kernels(spy)
    assert spy.calls == []
    assert not cpu_kernels().gc_centralize_([torch.eye(5, 3).to_sparse()], [], 0.0)


if __name__ == '__main__':
    checked = sys.argv[1]
    check_kernels_refuse(checked)
    check_optimizers(checked)
    check_centralize(checked)
    print(f'{checked}: all checks passed')
