"""The Triton kernels (mmgc/ops/gc_triton.py) against the float64 reference and the plain path.

Without a GPU (CI) they run on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``, set
by tests/conftest.py; ``MMGC_TRITON_ON_CPU=1`` sends CPU tensors to them), which executes the
same kernel code, program by program; ``MMGC_TRITON_DEVICE=cuda`` runs the
same tests compiled, on CUDA tensors (``tools/analysis_tools/gpu_check.sh``). Shapes are small
so that the interpreter stays quick, but they cover every path of the kernels: rows of 1 (not
centralized), 27, 300 (4 rows a program), 4608 and 25088 values (longer than a chunk: two
passes), 1-D tensors cut into chunks, and channels_last weights.
"""
import copy
import itertools
import os
import sys
import warnings

import pytest
import torch

import mmgc
from mmgc import ops
from mmgc.gc import centralize_

from .paths import SGD_OPTIONS, random_params

DEVICE = os.environ.get('MMGC_TRITON_DEVICE', 'cpu')
TOLERANCE = {torch.float64: 1e-12, torch.float32: 2e-6, torch.float16: 2e-3,
             torch.bfloat16: 1.6e-2}
SHAPES = [(16, 3, 3, 3), (4, 512, 3, 3), (2, 25088), (8, 4, 3, 3), (37, ), (5, 1), (6, 300),
          (3, 2000)]


@pytest.fixture(scope='module', autouse=True)
def kernels():
    """The Triton kernels, interpreted on the CPU (tests/conftest.py asked for the interpreter
    before anything imported Triton) unless MMGC_TRITON_DEVICE=cuda."""
    saved = os.environ.get('MMGC_TRITON_ON_CPU')
    if DEVICE == 'cpu':
        assert os.environ.get('TRITON_INTERPRET') == '1', 'tests/conftest.py sets it'
        os.environ['MMGC_TRITON_ON_CPU'] = '1'
    ops._state.update(triton=None, triton_failed=False)
    loaded = ops.kernels_for(torch.device(DEVICE))
    assert isinstance(loaded, ops._TritonKernels), 'the Triton kernels did not load'
    assert loaded.interpreted == (DEVICE == 'cpu')
    yield loaded
    if saved is None:
        os.environ.pop('MMGC_TRITON_ON_CPU', None)
    else:
        os.environ['MMGC_TRITON_ON_CPU'] = saved
    ops._state.update(triton=None, triton_failed=False)


@pytest.fixture
def launches(kernels, monkeypatch):
    """Counts the launchers' calls and how many of them took the tensors."""
    taken = {'gc_sgd_': [], 'gc_adam_': [], 'gc_centralize_': []}
    for name in taken:
        original = getattr(kernels.module, name)

        def spy(*args, original=original, name=name, **kwargs):
            result = original(*args, **kwargs)
            taken[name].append(result[0] if isinstance(result, tuple) else result)
            return result

        monkeypatch.setattr(kernels.module, name, spy)
    return taken


def weights(dtype, seed, shapes=SHAPES):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for shape in shapes:
        w = torch.randn(shape, generator=gen) + 0.5
        if shape == (8, 4, 3, 3):
            w = w.to(memory_format=torch.channels_last)
        out.append(torch.nn.Parameter(w.to(DEVICE, dtype)))
    return out


def gradients(params, step):
    gen = torch.Generator().manual_seed(1000 + step)
    return [torch.empty_like(p).copy_(torch.randn(p.shape, generator=gen) * 0.1) for p in params]


def relative_error(out, ref):
    out, ref = out.detach().cpu().double(), ref.detach().cpu().double()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def reference(cls, options, params, steps):
    """The same steps in float64 on the CPU, plain path (mmgc.gc, then torch's own step). For
    float16 / bfloat16 params the weights and states are rounded to their dtype after each
    step, as the kernels store them (their states then lose what the dtype cannot hold)."""
    dtype = params[0].dtype
    ref = [torch.nn.Parameter(p.detach().cpu().double().clone()) for p in params]
    optimizer = cls(ref, **options)
    with ops.fused_kernels(False):
        for step in range(steps):
            for r, g in zip(ref, gradients(params, step)):
                r.grad = g.detach().cpu().double().contiguous()
            optimizer.step()
            if dtype in (torch.float16, torch.bfloat16):
                for r in ref:
                    tensors = [r.data] + [v for k, v in optimizer.state[r].items() if k != 'step']
                    for t in tensors:
                        t.copy_(t.to(dtype))
    return ref, optimizer


def run(cls, options, params, steps, fused=True):
    optimizer = cls(params, **options)
    with ops.fused_kernels(fused):
        for step in range(steps):
            for p, g in zip(params, gradients(params, step)):
                p.grad = g
            optimizer.step()
    return optimizer


def three_ways(cls, options, seed, steps=2):
    """``(params, optimizer)`` after ``steps`` steps on the kernels, on the plain path, and in
    the float64 reference, from the same float32 weights."""
    fused = weights(torch.float32, seed)
    plain = [torch.nn.Parameter(p.detach().clone()) for p in fused]
    ref = reference(cls, options, fused, steps)
    return ((fused, run(cls, options, fused, steps)),
            (plain, run(cls, options, plain, steps, fused=False)), ref)


# ---------------------------------------------------------------- the GC operator
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize('decay', [0.0, 0.3])
def test_centralize_matches_the_float64_reference(dtype, decay, launches):
    tensors = [t.detach() for t in weights(dtype, 0)]
    params = [t.detach() for t in weights(dtype, 1)]
    ref = [t.double().cpu().clone() for t in tensors]
    centralize_(ref, params=[p.double().cpu() for p in params], decay=decay, fast=False)
    centralize_(tensors, params=params, decay=decay)
    assert launches['gc_centralize_'] == [True]
    for t, r in zip(tensors, ref):
        assert t.dtype == dtype and t.device.type == DEVICE
        assert relative_error(t, r) <= TOLERANCE[dtype], (t.shape, relative_error(t, r))
    # what GC leaves: slices of t + decay * p with mean 0 (up to the dtype's rounding)
    for t, p in zip(tensors, params):
        if mmgc.gc_applies(t):
            total = (t.double() + decay * p.double()).flatten(1)
            scale = total.abs().mean(1)
            assert (total.mean(1).abs() <= 4 * TOLERANCE[dtype] * scale + 1e-30).all()


def test_centralize_leaves_other_dtypes_and_ineligible_tensors_alone(launches):
    ws = [torch.randn(4, 5, device=DEVICE), torch.randn(6, 2, device=DEVICE, dtype=torch.float16),
          torch.randn(7, device=DEVICE), torch.randn(3, 1, device=DEVICE)]
    before = [w.clone() for w in ws]
    centralize_(ws)
    assert launches['gc_centralize_'] == [True]  # both dtypes in one call
    for w, b in zip(ws[:2], before[:2]):
        assert relative_error(w, b - b.float().mean(1, keepdim=True).to(b.dtype)) < 2e-3
    assert torch.equal(ws[2], before[2]) and torch.equal(ws[3], before[3])


# ---------------------------------------------------------------- SGD(W)


@pytest.mark.parametrize('cls,options', list(itertools.product((mmgc.SGDGC, mmgc.SGDWGC),
                                                                SGD_OPTIONS)))
def test_sgd_matches_the_plain_path_float32(cls, options, launches):
    (fused, fused_optimizer), (plain, plain_optimizer), (ref, ref_optimizer) = three_ways(
        cls, options, seed=2)
    assert launches['gc_sgd_'] == [True, True]
    for f, p, r in zip(fused, plain, ref):
        assert f.stride() == p.stride()
        assert relative_error(f, p) <= 2e-6 and relative_error(f, r) <= 2e-6
        if options.get('momentum'):
            buf = fused_optimizer.state[f]['momentum_buffer']
            assert buf.stride() == f.stride()
            assert relative_error(buf, ref_optimizer.state[r]['momentum_buffer']) <= 2e-6
            assert relative_error(buf, plain_optimizer.state[p]['momentum_buffer']) <= 2e-6


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float64])
def test_sgd_in_other_dtypes(dtype, launches):
    options = dict(lr=0.1, momentum=0.9, weight_decay=1e-2, nesterov=True)
    fused = weights(dtype, 3)
    ref, _ = reference(mmgc.SGDGC, options, fused, 2)
    run(mmgc.SGDGC, options, fused, 2)
    assert launches['gc_sgd_'] == [True, True]
    for f, r in zip(fused, ref):
        assert f.dtype == dtype
        assert relative_error(f, r) <= TOLERANCE[dtype]


# ---------------------------------------------------------------- Adam(W)
ADAM_CASES = list(itertools.product(
    (mmgc.AdamGC, mmgc.AdamWGC), ('grad', 'update'),
    (dict(lr=1e-2, weight_decay=0.1), dict(lr=1e-2, weight_decay=0.1, maximize=True,
                                           betas=(0.8, 0.99), eps=1e-6))))


@pytest.mark.parametrize('cls,gc_loc,options', ADAM_CASES)
def test_adam_matches_the_plain_path_float32(cls, gc_loc, options, launches):
    options = dict(options, gc_loc=gc_loc)
    (fused, fused_optimizer), (plain, plain_optimizer), (ref, ref_optimizer) = three_ways(
        cls, options, seed=4)
    assert launches['gc_adam_'] == [True, True]
    for f, p, r in zip(fused, plain, ref):
        assert relative_error(f, p) <= 2e-6 and relative_error(f, r) <= 2e-6
        state, ref_state = fused_optimizer.state[f], ref_optimizer.state[r]
        assert sorted(state) == sorted(plain_optimizer.state[p]) == sorted(ref_state)
        assert float(state['step']) == 2.0 and state['step'].device.type == 'cpu'
        for key in ('exp_avg', 'exp_avg_sq'):
            assert state[key].stride() == f.stride()
            assert relative_error(state[key], ref_state[key]) <= 2e-6


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize('gc_loc', ['grad', 'update'])
def test_adamw_in_other_dtypes(dtype, gc_loc, launches):
    options = dict(lr=1e-2, weight_decay=0.1, gc_loc=gc_loc)
    fused = weights(dtype, 5)
    ref, _ = reference(mmgc.AdamWGC, options, fused, 2)
    run(mmgc.AdamWGC, options, fused, 2)
    assert launches['gc_adam_'] == [True, True]
    for f, r in zip(fused, ref):
        assert relative_error(f, r) <= TOLERANCE[dtype]


def test_adam_step_counts_on_the_device_or_in_the_table_agree(kernels):
    """fused=True keeps torch's step counts on the params' device (read by the kernel); the
    default keeps them on the CPU (counted on the host and written into the table)."""
    results = []
    for in_table in (False, True):
        params = [p.detach() for p in weights(torch.float32, 6)]
        exp_avgs = [torch.zeros_like(p) for p in params]
        exp_avg_sqs = [torch.zeros_like(p) for p in params]
        steps = [torch.tensor(0.0, device=DEVICE if not in_table else 'cpu') for _ in params]
        for step in range(3):
            assert kernels.module.gc_adam_(
                params, gradients(params, step), exp_avgs, exp_avg_sqs, steps, False, 1e-2,
                0.9, 0.999, 1e-8, 0.05, True, False, False, steps_in_table=in_table)
        assert [float(s) for s in steps] == [3.0] * len(params)
        results.append(params)
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_adam_step_pointer_is_on_the_params_device(kernels, monkeypatch):
    """Step counts kept on the CPU are written into the table; the kernel's step pointer is
    then an empty tensor on the params' device, since a compiled launch refuses a CPU tensor
    there (found on an H200: the interpreter accepts it)."""
    module = kernels.module
    seen = []
    launch = module._launch

    def recording(kernel, prepared, proto, **constants):
        seen.append((constants['step_proto'], constants['STEP_IN_TABLE'], proto.device))
        return launch(kernel, prepared, proto, **constants)

    monkeypatch.setattr(module, '_launch', recording)
    for in_table in (False, True):
        params = [p.detach() for p in weights(torch.float32, 6)]
        steps = [torch.tensor(0.0, device='cpu' if in_table else DEVICE) for _ in params]
        assert module.gc_adam_(
            params, gradients(params, 0), [torch.zeros_like(p) for p in params],
            [torch.zeros_like(p) for p in params], steps, False, 1e-2, 0.9, 0.999, 1e-8, 0.05,
            True, False, False, steps_in_table=in_table)
        step_proto, flag, device = seen[-1]
        assert flag is in_table and step_proto.device == device
        assert step_proto.dtype == steps[0].dtype
        if in_table:
            assert step_proto.numel() == 0 and all(step_proto is not s for s in steps)
        else:
            assert step_proto is steps[0]


def test_weight_means_stay_put_with_gc_on_the_update():
    """AdamWGC(gc_loc='update'): every centralized weight keeps its slice means (Eq. 4)."""
    params = weights(torch.float64, 7)
    before = [p.detach().flatten(1).mean(1) if mmgc.gc_applies(p) else None for p in params]
    run(mmgc.AdamWGC, dict(lr=1e-2, weight_decay=0.1, gc_loc='update'), params, 3)
    for p, mean in zip(params, before):
        if mean is not None:
            torch.testing.assert_close(p.detach().flatten(1).mean(1), mean, rtol=0, atol=1e-13)


@pytest.mark.parametrize('seed', [0, 1])
@pytest.mark.parametrize('cls,options', [
    (mmgc.SGDGC, dict(lr=0.05, momentum=0.9, weight_decay=1e-2, nesterov=True)),
    (mmgc.AdamWGC, dict(lr=1e-2, weight_decay=0.1, gc_loc='update')),
])
def test_random_shapes_match_the_plain_path(cls, options, seed, launches):
    """The CPU kernels' random shapes (1-D to 4-D, sizes 1 to 6, channels_last for odd seeds,
    and two larger weights), on the kernels and on the plain path."""
    fused = [torch.nn.Parameter(p.detach().to(DEVICE)) for p in random_params(seed,
                                                                               torch.float32)]
    plain = [torch.nn.Parameter(p.detach().clone()) for p in fused]
    run(cls, options, fused, 2)
    run(cls, options, plain, 2, fused=False)
    assert launches['gc_sgd_' if cls is mmgc.SGDGC else 'gc_adam_'] == [True, True]
    for f, p in zip(fused, plain):
        assert f.stride() == p.stride()
        assert relative_error(f, p) <= 2e-6


# ---------------------------------------------------------------- the launch grid
def test_results_do_not_depend_on_the_launch_grid(kernels):
    """A tensor stepped alone, among others, or in another order: the same bits (each row's
    arithmetic is its own, whichever program and launch take it)."""
    def step(order):
        params = [p.detach() for p in weights(torch.float32, 8)]
        bufs = [None] * len(params)
        for k in range(2):
            grads = gradients(params, k)
            chosen = [params[i] for i in order]
            ok, new = kernels.module.gc_sgd_(chosen, [grads[i] for i in order],
                                             [bufs[i] for i in order], False, 1e-2, 0.0, 0.9,
                                             0.0, 0.1, True, False)
            assert ok
            for i, buf in zip(order, new):
                bufs[i] = buf
        return params

    together = step(list(range(len(SHAPES))))
    reversed_ = step(list(reversed(range(len(SHAPES)))))
    for a, b in zip(together, reversed_):
        assert torch.equal(a, b)
    alone = [step([i])[i] for i in (0, 2, 6)]  # short rows, long rows, 4 rows a program
    for a, i in zip(alone, (0, 2, 6)):
        assert torch.equal(a, together[i])


def test_chunk_size_changes_only_the_rounding(kernels, monkeypatch):
    """Long rows are summed chunk by chunk: another chunk size gives a result within rounding
    of the reference, and rows that now fit a chunk switch to the one-pass path."""
    options = dict(lr=0.1, momentum=0.9, weight_decay=1e-2)
    results = []
    for chunk in (4096, 1024):
        monkeypatch.setattr(kernels.module, 'CHUNK', chunk)
        params = weights(torch.float32, 9)
        run(mmgc.SGDGC, options, params, 2)
        results.append(params)
    ref, _ = reference(mmgc.SGDGC, options, weights(torch.float32, 9), 2)
    for a, b, r in zip(*results, ref):
        assert relative_error(a, r) <= 2e-6 and relative_error(b, r) <= 2e-6


# ---------------------------------------------------------------- what takes the plain path
def test_tensors_the_kernels_cannot_take_are_refused(kernels):
    module = kernels.module
    w = torch.randn(6, 5, device=DEVICE)
    g = torch.randn(6, 5, device=DEVICE)
    cases = {
        'gradient in another layout': ([w], [g.t().contiguous().t()]),
        'a param twice': ([w, w], [g, g.clone()]),
        'overlapping views': ([w[:4], w[2:]], [g[:4].clone(), g[2:].clone()]),
        'transposed param': ([w.t()], [g.t()]),
        'mixed dtypes': ([w, w.double()], [g, g.double()]),
        'integer param': ([torch.ones(6, 5, dtype=torch.int64, device=DEVICE)],
                          [torch.ones(6, 5, dtype=torch.int64, device=DEVICE)]),
        'negative view': ([w], [torch._neg_view(g)]),
    }
    for name, (params, grads) in cases.items():
        before = [p.clone() for p in params]
        ok, bufs = module.gc_sgd_(params, grads, [None] * len(params), False, 0.0, 0.0, 0.9,
                                  0.0, 0.1, False, False)
        assert (ok, bufs) == (False, []), name
        assert all(torch.equal(p, b) for p, b in zip(params, before)), name
    with torch.inference_mode():
        frozen = torch.randn(6, 5, device=DEVICE)
    assert not module.gc_centralize_([frozen], [], 0.0)


def test_what_the_last_step_checked_is_checked_again_when_it_changes(launches):
    """The launchers remember what they found about a param and about a group's memory; a
    param given other strides, or two params made to share memory, are refused all the same."""
    a = torch.nn.Parameter(torch.randn(6, 6, device=DEVICE))
    b = torch.nn.Parameter(torch.randn(6, 6, device=DEVICE))
    optimizer = mmgc.SGDGC([a, b], lr=0.1, momentum=0.9)
    for _ in range(2):
        a.grad, b.grad = torch.randn(6, 6, device=DEVICE), torch.randn(6, 6, device=DEVICE)
        optimizer.step()
    assert launches['gc_sgd_'] == [True, True]
    a.data = a.data.t()                                  # the same memory, other strides
    a.grad = torch.randn(6, 6, device=DEVICE).t()
    optimizer.step()
    assert launches['gc_sgd_'][-1] is False
    a.data = a.data.t().contiguous()
    b.data = a.data                                      # two params, one memory
    a.grad, b.grad = torch.randn(6, 6, device=DEVICE), torch.randn(6, 6, device=DEVICE)
    optimizer.step()
    assert launches['gc_sgd_'][-1] is False


def test_a_subclass_parameter_takes_the_plain_path(launches):
    class Tagged(torch.Tensor):
        pass

    w = torch.nn.Parameter(torch.randn(6, 5, device=DEVICE))
    twin = torch.nn.Parameter(w.detach().clone())
    optimizer, plain = mmgc.SGDGC([w], lr=0.1), mmgc.SGDGC([twin], lr=0.1)
    grad = torch.randn(6, 5, device=DEVICE)
    w.grad = grad.clone().as_subclass(Tagged)
    twin.grad = grad.clone()
    optimizer.step()
    with ops.fused_kernels(False):
        plain.step()
    assert launches['gc_sgd_'] == [False]
    torch.testing.assert_close(w.detach(), twin.detach())


def test_switched_off_the_kernels_are_not_called(launches, monkeypatch):
    params = weights(torch.float32, 10)
    run(mmgc.SGDGC, dict(lr=0.1, momentum=0.9), params, 1, fused=False)
    centralize_([torch.randn(4, 5, device=DEVICE)], fast=False)
    assert launches == {'gc_sgd_': [], 'gc_adam_': [], 'gc_centralize_': []}


def test_a_kernel_that_fails_warns_once_and_the_plain_path_runs(kernels, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError('PassManager::run failed\nmore detail')

    for name in ('gc_sgd_', 'gc_adam_', 'gc_centralize_'):
        monkeypatch.setattr(kernels.module, name, broken)
    monkeypatch.setitem(ops._state, 'triton_failed', False)
    params = weights(torch.float32, 11)
    plain = [torch.nn.Parameter(p.detach().clone()) for p in params]
    with pytest.warns(UserWarning, match=r'Triton GC kernels unavailable \(RuntimeError: '
                      r'PassManager::run failed\); using the plain path') as caught:
        run(mmgc.AdamWGC, dict(lr=1e-2, weight_decay=0.1), params, 2)
    assert len([w for w in caught if 'Triton' in str(w.message)]) == 1
    assert ops._state['triton_failed']
    run(mmgc.AdamWGC, dict(lr=1e-2, weight_decay=0.1), plain, 2, fused=False)
    for p, q in zip(params, plain):
        torch.testing.assert_close(p.detach(), q.detach())


def test_adam_step_counts_are_restored_when_the_launch_fails(kernels, monkeypatch):
    def no_launch(*args, **kwargs):
        raise RuntimeError('no launch')

    monkeypatch.setattr(kernels.module, '_launch', no_launch)
    p = torch.randn(4, 5, device=DEVICE)
    steps = [torch.tensor(3.0)]
    with pytest.raises(RuntimeError, match='no launch'):
        kernels.module.gc_adam_([p], [torch.randn_like(p)], [torch.zeros_like(p)],
                                [torch.zeros_like(p)], steps, False, 1e-2, 0.9, 0.999, 1e-8,
                                0.0, True, False, False)
    assert float(steps[0]) == 3.0


def test_the_step_is_visible_to_autograd(kernels):
    w = torch.nn.Parameter(torch.randn(6, 5, device=DEVICE))
    out = (w * w).sum()  # saves w for backward
    w.grad = torch.randn(6, 5, device=DEVICE)
    version = w._version
    mmgc.SGDGC([w], lr=0.1).step()
    assert w._version > version
    with pytest.raises(RuntimeError, match='modified by an inplace operation'):
        out.backward()


def test_state_dict_round_trip_after_kernel_steps(launches):
    params = weights(torch.float32, 12)
    optimizer = run(mmgc.SGDGC, dict(lr=0.1, momentum=0.9), params, 1)
    clone = [torch.nn.Parameter(p.detach().clone()) for p in params]
    resumed = mmgc.SGDGC(clone, lr=0.1, momentum=0.9)
    resumed.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        for p, q, g in zip(params, clone, gradients(params, 5)):
            p.grad, q.grad = g, g.clone()
        optimizer.step()
        resumed.step()
    assert launches['gc_sgd_'] == [True, True, True]
    for p, q in zip(params, clone):
        assert torch.equal(p, q)


def test_which_kernels_each_device_gets():
    """CUDA tensors get the compiled Triton kernels (building them needs no GPU), meta tensors
    none, CPU tensors the C++ ones unless MMGC_TRITON_ON_CPU=1 (then, under TRITON_INTERPRET=1,
    the interpreted Triton kernels)."""
    import subprocess
    code = ('import torch\nfrom mmgc import ops\n'
            'cuda = ops.kernels_for(torch.device("cuda"))\n'
            'print(type(cuda).__name__, cuda.interpreted, ops.kernels_for(torch.device("meta")))\n'
            'with ops.fused_kernels(False):\n'
            '    print(ops.kernels_for(torch.device("cuda")))\n')
    env = {k: v for k, v in os.environ.items()
           if k not in ('TRITON_INTERPRET', 'MMGC_TRITON_ON_CPU')}
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ['_TritonKernels', 'False', 'None', 'None']
    code = ('import torch\nfrom mmgc import ops\n'
            'cpu = ops.kernels_for(torch.device("cpu"))\n'
            'print(type(cpu).__name__, cpu.interpreted)\n')
    out = subprocess.run([sys.executable, '-c', code],
                         env=dict(env, TRITON_INTERPRET='1', MMGC_TRITON_ON_CPU='1'),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ['_TritonKernels', 'True']


# ---------------------------------------------------------------- the launch table
def table_inputs(dtype=torch.float32):
    params = [p.detach() for p in weights(dtype, 13)]
    grads = gradients(params, 0)
    bufs = [torch.randn_like(p) for p in params]
    avg_sqs = [torch.rand_like(p) for p in params]
    return params, grads, bufs, avg_sqs


def both_tables(kernels, monkeypatch, *args):
    """The table each builder writes for ``args``; Adam's step counts (``args[4]``) start from
    the same values for both, and are counted up once by each when it takes the table (else
    left as they were)."""
    counts = [c for c in args[4] if not c.is_meta]
    before = [c.detach().clone() for c in counts]
    out = []
    for cpp in (True, False):
        with torch.no_grad():
            for c, b in zip(counts, before):
                c.copy_(b)
        monkeypatch.setattr(kernels.module, 'USE_CPP_TABLE', cpp)
        out.append(kernels.module._table(*args))
        step = 1 if out[-1] is not None else 0
        for c, b in zip(counts, before):
            assert torch.equal(c.detach(), b + step) or b.isnan().all()
    return out


def test_the_cpp_and_python_tables_are_the_same(kernels, monkeypatch):
    """The table is written in C++ where the CPU kernels are built, else in Python: the same
    values either way (so the kernels do the same thing), for every kind of launch."""
    assert kernels.module._table_builder() is not None  # CI builds the C++ one
    params, grads, bufs, avg_sqs = table_inputs()
    n = len(params)
    empty = torch.empty(0, 7, device=DEVICE)
    counts = [torch.tensor(float(i)) for i in range(n)]
    adam = [1.0, 0.0, 0.99, 0.1, 0.999, 1e-3, 1e-8, 1e-3, 0.9, 0.999]
    cases = [
        (params, grads, [bufs], [2 * (i % 2) for i in range(n)], [], False, False, False,
         [1.0, 1e-2, 1.0, 0.9, 1.0, 0.1]),
        (params, grads, [bufs, avg_sqs], [0] * n, counts, True, True, False, adam),
        (params, grads, [bufs, avg_sqs], [0] * n, [c.to(DEVICE) for c in counts], False, True,
         False, adam),
        (params[:4] + [empty], params[:4] + [empty], [], [0] * 5, [], False, False, True, [0.0]),
    ]
    for case in cases:
        cpp, python = both_tables(kernels, monkeypatch, *case)
        assert cpp is not None and python is not None
        assert torch.equal(cpp[0].cpu(), python[0].cpu()) and cpp[1:] == python[1:]


def test_the_cpp_and_python_tables_refuse_the_same_inputs(kernels, monkeypatch):
    params, grads, bufs, _ = table_inputs()
    n = len(params)
    w, g = params[0], grads[0]
    zeros = [0] * n

    def adam(counts, in_table=True):
        return ([w], [g], [[bufs[0]], [bufs[0].clone()]], [0], counts, in_table, False, False,
                [1.0])

    cases = {
        'a bias where only centralized tensors may go': (params, params, [], zeros, [], False,
                                                         False, True, [0.0]),
        'a state in another layout': (params, grads, [[b.t() if b.dim() == 2 else b
                                                       for b in bufs]], zeros, [], False, False,
                                       False, [1.0]),
        'a state of another dtype': (params, grads, [[b.double() for b in bufs]], zeros, [],
                                     False, False, False, [1.0]),
        'a param twice': ([w, w], [g, g], [], [0, 0], [], False, False, False, [1.0]),
        'a param and its state in one memory': ([w], [g], [[w]], [0], [], False, False, False,
                                                [1.0]),
        'a transposed param': ([params[2].t()], [grads[2].t()], [], [0], [], False, False,
                               False, [1.0]),
        'a subclass gradient': ([w], [g.as_subclass(type('Tagged', (torch.Tensor, ), {}))], [],
                                [0], [], False, False, False, [1.0]),
        'no params': ([], [], [], [], [], False, False, False, [1.0]),
        'grads missing': ([w], [], [], [0], [], False, False, False, [1.0]),
        'a step count that is not a whole number': adam([torch.tensor(2.5)]),
        'a step count of inf': adam([torch.tensor(float('inf'))]),
        'a step count of nan': adam([torch.tensor(float('nan'))]),
        'a negative step count': adam([torch.tensor(-1.0)]),
        'a step count past 32 bits': adam([torch.tensor(2.0**33, dtype=torch.float64)]),
        'an integer step count': adam([torch.tensor(3)]),
        'a step count of two values': adam([torch.zeros(2)]),
        'a step count that needs grad': adam([torch.tensor(1.0, requires_grad=True)]),
        'a step count on the wrong device for the kernel': adam([torch.tensor(1.0, device='meta')],
                                                                in_table=False),
        'a negative view as step count': adam([torch._neg_view(torch.tensor(-2.0))]),
        'a state column too short': (params, grads, [bufs[:-1]], zeros, [], False, False, False,
                                     [1.0]),
        'flags too short': (params, grads, [], zeros[:-1], [], False, False, False, [1.0]),
        'step counts of two dtypes': ([w, params[1]], [g, grads[1]], [], [0, 0],
                                      [torch.tensor(1.0), torch.tensor(1.0, dtype=torch.float64)],
                                      True, False, False, [1.0]),
    }
    for name, case in cases.items():
        assert both_tables(kernels, monkeypatch, *case) == [None, None], name


def test_the_cpp_table_refuses_malformed_calls(kernels):
    """The binding itself, called wrongly, answers "not taken" (never reads out of bounds)."""
    build = kernels.module._table_builder().gc_triton_table
    w = torch.randn(4, 5, device=DEVICE)
    header, packed = [0.0] * 16, kernels.module._PACKED_FLAT
    count = torch.tensor(1.0)
    good = ([w], [w], [], [0], [count], True, False, False, 4096, header, 16, packed, False)
    assert build(*good)[0]
    bad = [
        ([w], [w], [], [], [], False, False, False, 4096, header, 16, packed, False),
        ([w], [w], [], [0], [count, count], True, False, False, 4096, header, 16, packed,
         False),
        ([w], [w], [[w]] * 3, [0], [], False, False, False, 4096, header, 16, packed, False),
        ([w], [w], [[]], [0], [], False, False, False, 4096, header, 16, packed, False),
        ([w], [w], [], [0], [], False, False, False, 0, header, 16, packed, False),
        ([w], [w], [], [0], [], False, False, False, 4096, [0.0] * 17, 16, packed, False),
    ]
    for args in bad:
        taken, table, total = build(*args)
        assert (taken, total) == (False, 0) and table is None
