"""Splits a GC optimizer step's time on the GPU into host time and device (kernel) time.

For each variant it reports the median host time of ``step()`` (until it returns, the GPU left
running), the kernels it launched and their summed time per step (from torch's profiler), and
the median wall time of a synchronized step. What the benchmark's wall time hides: whether a
step is bound by Python and launches or by memory traffic.

    python tools/analysis_tools/profile_gc_step.py --shapes tools/analysis_tools/shapes/faster-rcnn_r50_fpn.json
"""
import argparse
import json
import statistics
import time
from typing import Callable, Dict, List, Optional

import torch

import mmgc
from mmgc.ops import fused_kernels

SGD = dict(lr=0.02, momentum=0.9, weight_decay=1e-4)
ADAMW = dict(lr=1e-4, weight_decay=0.05)


def variants() -> Dict[str, Callable]:
    def plain(factory: Callable) -> Callable:
        def build(params):
            optimizer = factory(params)
            step = optimizer.step

            def step_plain():
                with fused_kernels(False):
                    step()
            optimizer.step = step_plain
            return optimizer
        return build

    return {
        'torch SGD (fused)': lambda ps: torch.optim.SGD(ps, **SGD, fused=True),
        'SGDGC (Triton)': lambda ps: mmgc.SGDGC(ps, **SGD),
        'SGDGC (plain path, fused)': plain(lambda ps: mmgc.SGDGC(ps, **SGD, fused=True)),
        'torch AdamW (fused)': lambda ps: torch.optim.AdamW(ps, **ADAMW, fused=True),
        'AdamWGC grad (Triton)': lambda ps: mmgc.AdamWGC(ps, **ADAMW, fused=True),
        'AdamWGC update (Triton)': lambda ps: mmgc.AdamWGC(ps, **ADAMW, gc_loc='update',
                                                           fused=True),
        'AdamWGC grad (Triton, CPU steps)': lambda ps: mmgc.AdamWGC(ps, **ADAMW),
    }


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description='Host and kernel time of GC optimizer steps')
    parser.add_argument('--shapes', required=True, help='JSON [[name, shape], ...]')
    parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
    parser.add_argument('--steps', type=int, default=30)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit('profile_gc_step.py needs a CUDA device')
    dtype = getattr(torch, args.dtype)
    shapes = [shape for _, shape in json.load(open(args.shapes))]
    gen = torch.Generator(device='cuda').manual_seed(0)
    print(f'{"variant":34s} {"host ms":>8s} {"wall ms":>8s} {"kernel ms":>10s} '
          f'{"launches":>9s}')
    for name, factory in variants().items():
        params = [torch.nn.Parameter(torch.randn(s, device='cuda', generator=gen).to(dtype))
                  for s in shapes]
        for p in params:
            p.grad = (torch.randn(p.shape, device='cuda', generator=gen) * 1e-3).to(dtype)
        optimizer = factory(params)
        for _ in range(5):
            optimizer.step()
        torch.cuda.synchronize()
        host, wall = [], []
        for _ in range(args.steps):
            torch.cuda.synchronize()
            start = time.perf_counter()
            optimizer.step()
            host.append(time.perf_counter() - start)
            torch.cuda.synchronize()
            wall.append(time.perf_counter() - start)
        from torch.profiler import ProfilerActivity, profile
        steps = 5
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(steps):
                optimizer.step()
            torch.cuda.synchronize()
        averages = prof.key_averages()
        kernel_ms = sum(getattr(e, 'self_device_time_total', 0.0) for e in averages) / 1e3 / steps
        launches = sum(e.count for e in averages
                       if getattr(e, 'self_device_time_total', 0.0) > 0) / steps
        print(f'{name:34s} {statistics.median(host) * 1e3:8.3f} '
              f'{statistics.median(wall) * 1e3:8.3f} {kernel_ms:10.3f} {launches:9.1f}')
        del optimizer, params
        torch.cuda.empty_cache()


if __name__ == '__main__':
    main()
