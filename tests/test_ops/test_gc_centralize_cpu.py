"""The GC operator's CPU kernel (mmgc.gc.centralize_'s fast path on CPU) against the reference
path (``fast=False``: per tensor, float64 sums) and against torch's grouped path."""
import pytest
import torch

from mmgc.gc import centralize_, gc_applies
from mmgc.ops import cpu_kernels, fused_kernels


def conv_fc_tensors(seed, dtype, channels_last=False):
    """conv / fc shaped tensors, some with rows longer than a thread's block of values."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [(8, 3, 3, 3), (5, 7), (6, 4, 5), (4, 2, 3, 3, 3), (3, 70000), (300, 1000), (2, 2)]
    tensors = [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) * 10 + 3
               for s in shapes]
    if channels_last:
        tensors[0] = tensors[0].to(memory_format=torch.channels_last)
    return tensors


def relative_error(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize('dtype,tolerance', [(torch.float32, 1e-6), (torch.float64, 1e-12)])
@pytest.mark.parametrize('decay', [0.0, 0.3])
@pytest.mark.parametrize('channels_last', [False, True])
def test_kernel_matches_the_reference_path(dtype, tolerance, decay, channels_last):
    kernels = cpu_kernels()
    tensors = conv_fc_tensors(0, dtype, channels_last)
    params = conv_fc_tensors(1, dtype, channels_last)
    fast = [t.clone() for t in tensors]
    reference = [t.clone() for t in tensors]
    taken = kernels.gc_centralize_(fast, params if decay else [], decay)
    assert taken
    centralize_(reference, params=params, decay=decay, fast=False)
    for f, r, p in zip(fast, reference, params):
        assert f.stride() == r.stride()
        assert relative_error(f, r) <= tolerance
        sums = (f.double() + decay * p.double()).flatten(1).sum(dim=1)
        assert sums.abs().max() <= tolerance * f.double().abs().sum()


@pytest.mark.parametrize('odd', ['view with gaps', 'transposed', 'float16', 'params unlike'])
def test_kernel_refuses_what_it_cannot_take_and_changes_nothing(odd):
    kernels = cpu_kernels()
    tensors = conv_fc_tensors(2, torch.float32)
    params = []
    if odd == 'view with gaps':
        tensors.append(torch.randn(4, 12)[:, ::2])
    elif odd == 'transposed':
        tensors.append(torch.randn(6, 10).t())
    elif odd == 'float16':
        tensors.append(torch.randn(4, 6).half())
    else:
        params = [t.t().contiguous().t() if t.dim() == 2 else t.clone() for t in tensors]
    before = [t.clone() for t in tensors]
    assert not kernels.gc_centralize_(tensors, params, 0.1 if params else 0.0)
    for t, b in zip(tensors, before):
        assert torch.equal(t, b)
    # centralize_ then takes torch's path for all of them, with the same result
    reference = [t.clone() for t in tensors]
    centralize_(tensors, params=params or None, decay=0.1 if params else 0.0)
    centralize_(reference, params=params or None, decay=0.1 if params else 0.0, fast=False)
    for t, r in zip(tensors, reference):
        assert relative_error(t, r) <= (1e-3 if t.dtype == torch.float16 else 1e-6)


def test_centralize_takes_the_kernel_on_cpu(monkeypatch):
    """centralize_ calls the kernel on CPU; its reference path (fast=False) never does."""
    calls = []
    kernels = cpu_kernels()

    class Spy:
        def gc_centralize_(self, *args):
            calls.append(len(args[0]))
            return kernels.gc_centralize_(*args)

    monkeypatch.setattr('mmgc.gc.kernels_for', lambda device: Spy())
    tensors = conv_fc_tensors(3, torch.float32) + [torch.randn(5)]   # a bias: not centralized
    centralize_(tensors)
    assert calls == [sum(gc_applies(t) for t in tensors)]
    centralize_(tensors, fast=False)
    assert len(calls) == 1


@pytest.mark.parametrize('seed', range(3))
def test_kernel_and_torch_grouped_path_agree(seed):
    tensors = conv_fc_tensors(seed, torch.float32, channels_last=bool(seed % 2))
    with_kernel = [t.clone() for t in tensors]
    with_torch = [t.clone() for t in tensors]
    centralize_(with_kernel)
    with fused_kernels(False):
        centralize_(with_torch)
    for a, b in zip(with_kernel, with_torch):
        assert relative_error(a, b) <= 1e-6
