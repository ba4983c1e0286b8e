"""Times optimizer steps with and without Gradient Centralization, side by side.

Builds the trainable parameters of a config's model (``init_cfg=None``; default Faster R-CNN
R50-FPN), or takes their names and shapes from a JSON file (``--shapes``: no mmdet, no config),
gives them random gradients and times ``step()`` of torch's SGD in every implementation the
device has (for-loop, foreach, fused) against ``SGDGC``; torch's AdamW against ``AdamWGC``
(``gc_loc='grad'`` and ``'update'``); and ``GCOptimWrapper`` around torch's SGD. The ``(plain
path, ...)`` rows run the same GC optimizers with mmgc's fused kernels switched off
(:func:`mmgc.ops.fused_kernels`): slice means and a grouped subtraction, then torch's own step.
Variants run interleaved (one step of each in turn, in a new random order each round) after a
warm-up; the median is reported with its ratio to the fastest torch variant of the same family.
Variants that the device refuses for ``--dtype`` are left out, and named.

    python tools/analysis_tools/benchmark_optimizer.py                       # CPU, Faster R-CNN
    python tools/analysis_tools/benchmark_optimizer.py CONFIG --device cuda --repeats 50
    python tools/analysis_tools/benchmark_optimizer.py --device cuda --dtype bfloat16 \
        --shapes tools/analysis_tools/shapes/faster-rcnn_r50_fpn.json
    make bench
"""
import argparse
import json
import os
import random
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

import mmgc
from mmgc.ops import fused_kernels

DEFAULT_CONFIG = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
SGD = dict(lr=0.02, momentum=0.9, weight_decay=1e-4)
ADAMW = dict(lr=1e-4, weight_decay=0.05)
DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Benchmark GC optimizer steps')
    parser.add_argument('config', nargs='?',
                        help=f'config whose model supplies the parameters ({DEFAULT_CONFIG} '
                        'unless --shapes is given)')
    parser.add_argument('--shapes', metavar='JSON',
                        help='take the parameters from this file instead of a config: a list of '
                        '[name, [size, ...]] pairs, one per trainable tensor (see '
                        'tools/analysis_tools/shapes/); needs neither mmdet nor a config')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--dtype', default='float32', choices=list(DTYPES),
                        help='dtype of the parameters and their gradients (default float32)')
    parser.add_argument('--warmup', type=int, default=5, help='untimed rounds first')
    parser.add_argument('--repeats', type=int, default=100, help='timed rounds')
    parser.add_argument('--families', nargs='+', default=['sgd', 'adamw', 'wrapper'],
                        choices=['sgd', 'adamw', 'wrapper'])
    args = parser.parse_args(argv)
    if args.config and args.shapes:
        parser.error('give either a config or --shapes, not both')
    if args.warmup < 0 or args.repeats < 2:
        parser.error('--warmup must be >= 0 and --repeats >= 2')
    if not args.shapes:
        args.config = args.config or DEFAULT_CONFIG
    return args


def load_shapes(path: str) -> List[Tuple[str, List[int]]]:
    """``[(name, shape), ...]`` from a ``--shapes`` file, checked."""
    with open(path) as f:
        entries = json.load(f)
    if not isinstance(entries, list) or not entries:
        raise SystemExit(f'--shapes {path}: expected a non-empty list of [name, shape] pairs')
    shapes = []
    for entry in entries:
        ok = (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
              and isinstance(entry[1], list)
              and all(isinstance(n, int) and n >= 0 for n in entry[1]))
        if not ok:
            raise SystemExit(f'--shapes {path}: not a [name, [size, ...]] pair: {entry!r}')
        shapes.append((entry[0], entry[1]))
    return shapes


def parameters_from_shapes(path: str, device: str, dtype: torch.dtype) -> List[torch.Tensor]:
    """Tensors of the shapes in a ``--shapes`` file (their values are overwritten later)."""
    gen = torch.Generator().manual_seed(0)
    return [(torch.randn(shape, generator=gen) * 0.02).to(device=device, dtype=dtype)
            for _, shape in load_shapes(path)]


def build_parameters(config: str, device: str,
                     dtype: torch.dtype = torch.float32) -> List[torch.Tensor]:
    from mmengine.config import Config  # only here: --shapes needs no config
    from mmengine.hub import get_config
    from mmengine.registry import init_default_scope

    # 'mmdet::...' names a config shipped in that package.
    cfg = get_config(config) if '::' in config else Config.fromfile(config)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    from mmengine.registry import MODELS
    if cfg.model.get('backbone') is not None:
        cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    return [p.detach().to(device=device, dtype=dtype) for p in model.parameters()
            if p.requires_grad]


class PlainPath:
    """A GC optimizer stepped with mmgc's fused kernels switched off: the plain path."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def step(self) -> None:
        with fused_kernels(False):
            self.optimizer.step()


def variants(families: List[str], device: str) -> Dict[str, tuple]:
    """name -> (family, is_torch_baseline, factory(params) -> object with .step())."""
    out: Dict[str, tuple] = {}
    impls = {'for-loop': dict(foreach=False), 'foreach': dict(foreach=True),
             'fused': dict(fused=True)}
    if 'sgd' in families or 'wrapper' in families:
        for impl, kw in impls.items():
            out[f'torch SGD ({impl})'] = ('sgd', True,
                                          lambda ps, kw=kw: torch.optim.SGD(ps, **SGD, **kw))
    if 'sgd' in families:
        for impl, kw in impls.items():
            out[f'SGDGC ({impl})'] = ('sgd', False, lambda ps, kw=kw: mmgc.SGDGC(ps, **SGD, **kw))
        out['SGDGC (plain path, fused)'] = ('sgd', False, lambda ps: PlainPath(
            mmgc.SGDGC(ps, **SGD, fused=True)))
    if 'wrapper' in families:
        out['GCOptimWrapper(SGD fused)'] = ('sgd', False, lambda ps: mmgc.GCOptimWrapper(
            optimizer=torch.optim.SGD(ps, **SGD, fused=True)))
    if 'adamw' in families:
        for impl, kw in impls.items():
            out[f'torch AdamW ({impl})'] = (
                'adamw', True, lambda ps, kw=kw: torch.optim.AdamW(ps, **ADAMW, **kw))
        for loc in ('grad', 'update'):
            out[f'AdamWGC gc_loc={loc} (fused)'] = ('adamw', False, lambda ps, loc=loc: mmgc.
                                                    AdamWGC(ps, **ADAMW, gc_loc=loc, fused=True))
        for loc in ('grad', 'update'):
            out[f'AdamWGC gc_loc={loc} (plain path, fused)'] = (
                'adamw', False, lambda ps, loc=loc: PlainPath(
                    mmgc.AdamWGC(ps, **ADAMW, gc_loc=loc, fused=True)))
    return out


def refusal(factory: Callable[[List[torch.nn.Parameter]], Any], device: str,
            dtype: torch.dtype) -> Optional[str]:
    """Why the device refuses a variant for ``dtype`` (two steps on two small tensors), or None
    when it takes it."""
    params = [torch.nn.Parameter(torch.ones(shape, device=device, dtype=dtype))
              for shape in ((16, 16, 3, 3), (16,))]
    for p in params:
        p.grad = torch.full_like(p, 1e-3)
    try:
        optimizer = factory(params)
        for _ in range(2):
            optimizer.step()
    except Exception as error:  # torch's refusals are RuntimeError, ValueError, ...: all shown
        lines = str(error).strip().splitlines()
        return f'{type(error).__name__}: {lines[0] if lines else ""}'[:160]
    return None


def state_bytes(optimizer) -> int:
    optimizer = getattr(optimizer, 'optimizer', optimizer)
    return sum(v.numel() * v.element_size() for s in optimizer.state.values()
               for v in s.values() if torch.is_tensor(v))


def peak_extra_bytes(step: Callable[[], None], device: str) -> int:
    """Peak memory a step allocates beyond what existed before it."""
    if device == 'cuda':
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    from torch.profiler import ProfilerActivity, profile
    stderr = os.dup(2)  # the profiler prints its start and stop on stderr
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step()
    finally:
        os.dup2(stderr, 2)
        os.close(devnull)
        os.close(stderr)
    current = peak = 0
    events = sorted((e for e in prof.events() if e.cpu_memory_usage),
                    key=lambda e: e.time_range.start)
    for event in events:
        current += event.cpu_memory_usage
        peak = max(peak, current)
    return peak


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no CUDA device is available')
    dtype = DTYPES[args.dtype]
    if args.shapes:
        params0 = parameters_from_shapes(args.shapes, args.device, dtype)
    else:
        params0 = build_parameters(args.config, args.device, dtype)
    gen = torch.Generator(device=args.device).manual_seed(0)
    # Drawn in float32 and rounded: the same gradients whatever the dtype.
    grads0 = [(torch.randn(p.shape, generator=gen, device=args.device) * 1e-3).to(dtype)
              for p in params0]
    sync = torch.cuda.synchronize if args.device == 'cuda' else (lambda: None)

    runs = {}
    skipped: Dict[str, str] = {}
    for name, (family, baseline, factory) in variants(args.families, args.device).items():
        reason = refusal(factory, args.device, dtype)
        if reason is not None:
            skipped[name] = reason
            continue
        params = [torch.nn.Parameter(p.clone()) for p in params0]
        for p, g in zip(params, grads0):
            p.grad = g.clone()
        runs[name] = (family, baseline, factory(params))
    times: Dict[str, List[float]] = {name: [] for name in runs}
    order = list(runs)
    shuffle = random.Random(0).shuffle
    for round_ in range(args.warmup + args.repeats):
        shuffle(order)  # no variant always runs after the same one (caches, memory state)
        for name in order:
            optimizer = runs[name][2]
            sync()
            start = time.perf_counter()
            optimizer.step()
            sync()
            if round_ >= args.warmup:
                times[name].append(time.perf_counter() - start)

    medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    fastest: Dict[str, str] = {}  # family -> its fastest torch variant
    for name, (family, baseline, _) in runs.items():
        if baseline and medians[name] < medians.get(fastest.get(family, ''), float('inf')):
            fastest[family] = name
    for name in [n for n, (family, _, _) in runs.items() if family not in fastest]:
        skipped[name] = 'no torch variant of its family to compare with'
        del runs[name]
    torch_state = {family: min(state_bytes(o) for n, (f, b, o) in runs.items() if f == family and b)
                   for family in fastest}

    numel = sum(p.numel() for p in params0)
    device = torch.cuda.get_device_name() if args.device == 'cuda' else 'CPU'
    print(f'device: {args.device} ({device}, {torch.get_num_threads()} threads)  '
          f'torch {torch.__version__}  mmgc {mmgc.__version__}')
    source = f'{args.shapes} (shapes)' if args.shapes else args.config
    print(f'model: {source}  trainable tensors: {len(params0)}  values: {numel / 1e6:.1f} M  '
          f'dtype: {args.dtype}')
    print(f'{args.repeats} interleaved rounds (random order) after {args.warmup} warm-up rounds; '
          'median per step')
    for name, reason in skipped.items():
        print(f'skipped: {name} ({args.device}, {args.dtype}): {reason}')
    width = max([34] + [len(name) for name in runs])
    header = (f'{"variant":{width}s} {"ms/step":>9s} {"ratio":>7s} {"ratio q1-q3":>13s} '
              f'{"peak extra MiB":>15s} {"held extra MiB":>15s}')
    print(header)
    print('-' * len(header))
    for name, (family, baseline, optimizer) in runs.items():
        # Per round, against the fastest torch variant timed next to it: drift cancels out.
        ratios = [t / r for t, r in zip(times[name], times[fastest[family]])]
        q1, ratio, q3 = statistics.quantiles(ratios, n=4)
        extra = held = ''
        if not baseline:
            extra = f'{peak_extra_bytes(optimizer.step, args.device) / 2**20:.1f}'
            held = f'{(state_bytes(optimizer) - torch_state[family]) / 2**20:.1f}'
        print(f'{name:{width}s} {medians[name]:9.2f} {ratio:7.3f} {f"{q1:.3f}-{q3:.3f}":>13s} '
              f'{extra:>15s} {held:>15s}')
    print('ratio: median over rounds of the step time over that of the fastest torch variant of '
          'the same family (SGD or AdamW) in the same round; q1-q3: its quartiles')
    if any('plain path' in name for name in runs):
        print('plain path: the GC optimizer with mmgc\'s fused kernels off (slice means, grouped '
              'subtraction, then torch\'s own step)')


if __name__ == '__main__':
    main()
