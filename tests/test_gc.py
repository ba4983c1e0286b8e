"""The GC operator (mmgc/gc.py) against GC_SPEC's definition and properties."""
import pytest
import torch

from mmgc.gc import centralize_, centralized_update, gc_applies
from mmgc.ops import fused_kernels

SHAPES = [(8, 3, 3, 3), (5, 7), (6, 4, 5), (4, 2, 3, 3, 3), (3, 1, 1, 1), (4, 1), (7,)]


def slice_means(t: torch.Tensor) -> torch.Tensor:
    return t.double().flatten(1).mean(dim=1)


def reference_phi(g: torch.Tensor, conv_only: bool = False) -> torch.Tensor:
    """Eq. 1, written from GC_SPEC, in float64."""
    g = g.double()
    eligible = g.dim() > (3 if conv_only else 1) and g[0].numel() > 1
    if not eligible:
        return g.clone()
    return g - g.flatten(1).mean(dim=1).view(-1, *([1] * (g.dim() - 1)))


def random_tensors(seed: int = 0, dtype: torch.dtype = torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) * 3 + 1 for s in SHAPES]


@pytest.mark.parametrize('fast', [True, False])
@pytest.mark.parametrize('conv_only', [False, True])
def test_matches_definition(fast, conv_only):
    tensors = random_tensors()
    expected = [reference_phi(t, conv_only) for t in tensors]
    centralize_(tensors, conv_only, fast=fast)
    for t, e in zip(tensors, expected):
        torch.testing.assert_close(t, e, rtol=1e-12, atol=1e-12)


def test_which_tensors_are_centralized():
    assert gc_applies(torch.zeros(8, 3, 3, 3))
    assert gc_applies(torch.zeros(5, 7))
    assert not gc_applies(torch.zeros(5, 7), conv_only=True)
    assert not gc_applies(torch.zeros(6, 4, 5), conv_only=True)
    assert gc_applies(torch.zeros(6, 4, 5, 1), conv_only=True)
    assert not gc_applies(torch.zeros(7))                 # bias, norm
    assert not gc_applies(torch.zeros(4, 1))              # M == 1: left unchanged
    assert not gc_applies(torch.zeros(3, 1, 1, 1))
    assert not gc_applies(torch.zeros(0, 3))              # empty


def test_slice_means_are_zero_and_single_element_slices_untouched():
    tensors = random_tensors(1)
    before = [t.clone() for t in tensors]
    centralize_(tensors)
    for t, b in zip(tensors, before):
        if gc_applies(b):
            assert slice_means(t).abs().max() < 1e-14
        else:
            assert torch.equal(t, b)


def test_projection_properties():
    """P^2 = P = P^T and ||Phi(g)|| <= ||g|| (Thm 4.2)."""
    g, h = random_tensors(2), random_tensors(3)
    pg, ph = [t.clone() for t in g], [t.clone() for t in h]
    centralize_(pg)
    centralize_(ph)
    ppg = [t.clone() for t in pg]
    centralize_(ppg)
    for a, b in zip(ppg, pg):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)
    for gi, hi, pgi, phi in zip(g, h, pg, ph):
        # <P g, h> == <g, P h>
        torch.testing.assert_close((pgi * hi).sum(), (gi * phi).sum(), rtol=1e-12, atol=1e-12)
        assert pgi.norm() <= gi.norm() + 1e-12
    assert any(pgi.norm() < gi.norm() - 1e-6 for gi, pgi in zip(g, pg))


@pytest.mark.parametrize('fast', [True, False])
def test_channels_last(fast):
    g = torch.randn(8, 6, 3, 3, dtype=torch.float64) + 2
    g_cl = g.clone().to(memory_format=torch.channels_last)
    centralize_([g_cl], fast=fast)
    assert g_cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(g_cl, reference_phi(g), rtol=1e-12, atol=1e-12)


def test_non_contiguous_view():
    base = torch.randn(6, 10, dtype=torch.float64) + 1
    view = base.t()                                       # (10, 6), strided
    expected = reference_phi(view)
    centralize_([view])
    torch.testing.assert_close(view, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(base, expected.t(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_low_precision_means_accumulate_in_float32(dtype):
    # 4096 values near 100: a mean accumulated in bf16/fp16 would be off by whole units.
    gen = torch.Generator().manual_seed(0)
    g32 = 100 + torch.rand(4, 4096, generator=gen)
    g = g32.to(dtype)
    expected = (g.float() - g.float().mean(dim=1, keepdim=True)).to(dtype)
    centralize_([g])
    assert g.dtype == dtype
    ulp = torch.finfo(dtype).eps * 2
    assert (g.float() - expected.float()).abs().max() <= ulp
    assert g.float().mean(dim=1).abs().max() < 0.05


@pytest.mark.parametrize('seed', range(5))
@pytest.mark.parametrize('kernels', [True, False])
def test_fast_and_plain_paths_agree(seed, kernels):
    """float32, random shapes, layouts and dtypes: relative error <= 1e-6 (the fast path on CPU:
    the compiled kernel, or torch's grouped ops where the kernels are off)."""
    gen = torch.Generator().manual_seed(seed)
    tensors = []
    for _ in range(12):
        ndim = int(torch.randint(1, 5, (1, ), generator=gen))
        shape = [int(s) for s in torch.randint(1, 9, (ndim, ), generator=gen)]
        t = torch.randn(shape, generator=gen) * 10 + 3
        if ndim == 4 and seed % 2:
            t = t.to(memory_format=torch.channels_last)
        tensors.append(t)
    fast = [t.clone() for t in tensors]
    plain = [t.clone() for t in tensors]
    with fused_kernels(kernels):
        centralize_(fast, fast=True)
    centralize_(plain, fast=False)
    for f, p in zip(fast, plain):
        assert ((f - p).norm() / p.norm().clamp_min(1e-12)) <= 1e-6


def test_decay_folds_params_into_the_mean():
    """t -= mean(t + decay * p): afterwards t + decay * p is centralized."""
    g, w = random_tensors(4), random_tensors(5)
    expected = [reference_phi(gi + 0.3 * wi) - 0.3 * wi for gi, wi in zip(g, w)]
    centralize_(g, params=w, decay=0.3)
    for gi, wi, e in zip(g, w, expected):
        torch.testing.assert_close(gi, e, rtol=1e-12, atol=1e-12)
        if gc_applies(gi):
            assert slice_means(gi + 0.3 * wi).abs().max() < 1e-13


def test_decay_needs_params():
    with pytest.raises(ValueError, match='params'):
        centralize_(random_tensors(), decay=0.1)


def test_empty_list_and_empty_tensors():
    centralize_([])
    empty = torch.zeros(0, 4)
    centralize_([empty])
    assert empty.shape == (0, 4)
    with centralized_update([]):
        pass


def test_sparse_tensor_is_refused_with_its_shape():
    sparse = torch.eye(5, 3).to_sparse()
    with pytest.raises(ValueError, match=r'sparse.*\(5, 3\)'):
        centralize_([sparse])


def test_centralized_update_keeps_slice_means():
    params = random_tensors(6)
    old = [p.clone() for p in params]
    steps = random_tensors(7)
    with centralized_update(params):
        for p, s in zip(params, steps):
            p.add_(s)
    for p, o, s in zip(params, old, steps):
        torch.testing.assert_close(p, o + reference_phi(s), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('kernels', [True, False])
@pytest.mark.parametrize('fast', [True, False])
def test_a_tensor_listed_twice_is_centralized_once(kernels, fast):
    """A parameter twice in a param group gives the same gradient twice: it loses its slice
    means once (with decay too), and centralized_update counts its step once."""
    g, h, w = random_tensors(8)[0], random_tensors(9)[1], random_tensors(10)[0]
    twice, decayed = g.clone(), g.clone()
    with fused_kernels(kernels):
        centralize_([twice, h.clone(), twice], fast=fast)
        centralize_([decayed, decayed], params=[w, w], decay=0.5, fast=fast)
    torch.testing.assert_close(twice, reference_phi(g), rtol=0, atol=1e-12)
    torch.testing.assert_close(decayed, reference_phi(g + 0.5 * w) - 0.5 * w, rtol=0, atol=1e-12)
    p = g.clone()
    with fused_kernels(kernels), centralized_update([p, p], fast=fast):
        p.add_(w)
    torch.testing.assert_close(p, g + reference_phi(w), rtol=0, atol=1e-12)
