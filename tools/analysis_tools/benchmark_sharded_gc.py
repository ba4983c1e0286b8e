"""What GC costs under each sharded engine: extra communication (calls and bytes per step) and
the optimizer step's time, ``SGDGC`` against torch's ``SGD``, on two CPU ranks over gloo.

Engines: ``ddp`` (DistributedDataParallel, the reference), ``zero`` (DDP + mmgc's
``ZeroRedundancyOptimizer``), ``fsdp`` and ``fsdp-flat`` (FSDP1 with ``use_orig_params`` True /
False, one unit per residual block and the root), ``fsdp2`` (``fully_shard`` per block and the
root). For each, one forward / backward gives the gradients; then ``--steps`` rounds time one
``SGD`` and one ``SGDGC`` step (momentum 0.9, weight decay 1e-4) on the same model, in turn,
after a barrier. Every collective call made inside a step is counted (calls and bytes), so GC's
extra communication is the difference between the two; the time GC's row-sum all-reduce takes
(FSDP1 only) is measured on its own. The median of a full iteration (forward, backward, SGD
step) gives the scale.

    python tools/analysis_tools/benchmark_sharded_gc.py                  # torchvision ResNet-50
    python tools/analysis_tools/benchmark_sharded_gc.py --model resnet18 --engines fsdp fsdp2

Numbers are the slower rank's medians. The step times include the engine's own communication
(ZeRO's broadcasts), which SGD and SGDGC share.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import torch

ROOT = Path(__file__).resolve().parents[2]
ENGINES = ('ddp', 'zero', 'fsdp', 'fsdp-flat', 'fsdp2')
MODELS = ('resnet50', 'resnet18', 'tiny')
COLLECTIVES = ('all_reduce', 'broadcast', 'all_gather', 'all_gather_into_tensor',
               'reduce_scatter_tensor', 'reduce_scatter', 'all_to_all_single')
OPTIONS = dict(lr=0.01, momentum=0.9, weight_decay=1e-4)


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', choices=MODELS, default='resnet50',
                        help='torchvision ResNet-50 / ResNet-18, or a two-layer toy (for tests)')
    parser.add_argument('--engines', nargs='+', choices=ENGINES, default=list(ENGINES))
    parser.add_argument('--steps', type=int, default=20, help='timed rounds (default 20)')
    parser.add_argument('--iters', type=int, default=3,
                        help='full iterations timed for the scale (default 3)')
    parser.add_argument('--batch', type=int, default=2, help='images per rank (default 2)')
    parser.add_argument('--size', type=int, default=64, help='image side (default 64)')
    parser.add_argument('--json', type=Path, help='also write the numbers here')
    parser.add_argument('--rank', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--port', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--out', type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ('steps', 'iters', 'batch', 'size'):
        if getattr(args, name) < 1:
            parser.error(f'--{name} must be at least 1')
    return args


# -- one rank ----------------------------------------------------------------------------------
def make_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == 'tiny':
        return torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.AdaptiveAvgPool2d(2),
                                   torch.nn.Flatten(), torch.nn.Linear(20, 10))
    import torchvision
    return getattr(torchvision.models, name)(weights=None)


def blocks(model: torch.nn.Module) -> List[torch.nn.Module]:
    """The residual blocks (the toy's layers): FSDP's units besides the root."""
    found = [m for m in model.modules() if type(m).__name__ in ('Bottleneck', 'BasicBlock')]
    return found or [m for m in model if any(True for _ in m.parameters())]


def wrap(engine: str, model: torch.nn.Module) -> torch.nn.Module:
    cpu = torch.device('cpu')
    if engine in ('ddp', 'zero'):
        from torch.nn.parallel import DistributedDataParallel
        return DistributedDataParallel(model)
    if engine == 'fsdp2':
        from torch.distributed.fsdp import fully_shard
        for block in blocks(model):
            fully_shard(block)
        return fully_shard(model)
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy
    unit_types = {type(block) for block in blocks(model)}
    return FSDP(model, device_id=cpu, use_orig_params=engine == 'fsdp',
                auto_wrap_policy=ModuleWrapPolicy(unit_types))


def optimizer(engine: str, model: torch.nn.Module, name: str) -> torch.optim.Optimizer:
    import mmgc
    if engine == 'zero':
        return mmgc.ZeroRedundancyOptimizer(model.parameters(), optimizer_type=name, **OPTIONS)
    cls = mmgc.SGDGC if name == 'SGDGC' else torch.optim.SGD
    return cls(model.parameters(), **OPTIONS)


class Traffic:
    """Counts the collective calls (and their bytes) made while :meth:`counting`."""

    def __init__(self) -> None:
        import torch.distributed as dist
        self.calls = 0
        self.bytes = 0
        self.on = False
        for name in COLLECTIVES:
            original = getattr(dist, name, None)
            if original is not None:
                setattr(dist, name, self._counted(original))

    def _counted(self, original: Callable) -> Callable:
        def call(*args: Any, **kwargs: Any) -> Any:
            if self.on:
                self.calls += 1
                self.bytes += sum(t.numel() * t.element_size() for t in _tensors(args))
            return original(*args, **kwargs)
        return call

    @contextmanager
    def counting(self) -> Iterator[None]:
        self.on, self.calls, self.bytes = True, 0, 0
        try:
            yield
        finally:
            self.on = False


def _tensors(args: Any) -> Iterator[torch.Tensor]:
    """The tensors a collective sends (its first tensor argument, or the first list of them)."""
    for arg in args:
        if isinstance(arg, torch.Tensor):
            yield arg
            return
        if isinstance(arg, (list, tuple)) and arg and isinstance(arg[0], torch.Tensor):
            yield from arg
            return


def row_sum_clock() -> List[float]:
    """Times mmgc's FSDP1 row-sum all-reduce (module-level lookup, so the patch is seen)."""
    from mmgc.dist import fsdp
    spent: List[float] = []
    original = fsdp.reduced_row_sums

    def timed(sums: torch.Tensor, group: Any) -> torch.Tensor:
        start = time.perf_counter()
        try:
            return original(sums, group)
        finally:
            spent.append(time.perf_counter() - start)

    fsdp.reduced_row_sums = timed
    return spent


def rank_main(args: argparse.Namespace) -> None:
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(args.port))
    dist.init_process_group('gloo', rank=args.rank, world_size=2)
    torch.set_num_threads(1)
    traffic = Traffic()
    row_sums = row_sum_clock()
    gen = torch.Generator().manual_seed(args.rank)
    images = torch.randn(args.batch, 3, args.size, args.size, generator=gen)
    results: Dict[str, Any] = {}
    for engine in args.engines:
        model = wrap(engine, make_model(args.model))
        sgd, sgdgc = (optimizer(engine, model, name) for name in ('SGD', 'SGDGC'))
        iteration: List[float] = []
        for _ in range(args.iters + 1):  # (the first one warms up)
            dist.barrier()
            start = time.perf_counter()
            sgd.zero_grad()
            model(images).float().pow(2).mean().backward()
            sgd.step()
            iteration.append(time.perf_counter() - start)
        times: Dict[str, List[float]] = {'SGD': [], 'SGDGC': []}
        counts: Dict[str, Any] = {}
        for round_ in range(args.steps + 1):
            for name, opt in (('SGD', sgd), ('SGDGC', sgdgc)):
                dist.barrier()
                before = len(row_sums)
                with traffic.counting():
                    start = time.perf_counter()
                    opt.step()
                    spent = time.perf_counter() - start
                if round_:  # (round 0 warms up: states, kernels, FSDP layouts)
                    times[name].append(spent)
                    counts[name] = (traffic.calls, traffic.bytes)
                    if name == 'SGDGC':
                        counts.setdefault('row_sums', []).append(sum(row_sums[before:]))
        results[engine] = dict(
            iteration_ms=1e3 * statistics.median(iteration[1:]),
            sgd_ms=1e3 * statistics.median(times['SGD']),
            sgdgc_ms=1e3 * statistics.median(times['SGDGC']),
            calls=counts['SGD'][0], bytes=counts['SGD'][1],
            gc_calls=counts['SGDGC'][0] - counts['SGD'][0],
            gc_bytes=counts['SGDGC'][1] - counts['SGD'][1],
            row_sum_ms=1e3 * statistics.median(counts['row_sums']),
            params=sum(p.numel() for p in make_model(args.model).parameters()))
        del model, sgd, sgdgc
    args.out.write_text(json.dumps(results))
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)  # (no interpreter teardown of gloo's threads: see mmgc.utils.launch)


# -- the launcher ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_ranks(args: argparse.Namespace, argv: List[str]) -> List[Dict[str, Any]]:
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))
    with tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / f'rank{rank}.json' for rank in range(2)]
        procs = [subprocess.Popen([sys.executable, __file__, *argv, '--rank', str(rank),
                                   '--port', str(port), '--out', str(out)], env=env)
                 for rank, out in enumerate(outs)]
        while any(p.poll() is None for p in procs):
            if any(p.poll() not in (None, 0) for p in procs):
                for p in procs:
                    if p.poll() is None:
                        p.kill()
            time.sleep(0.2)
        if any(p.returncode != 0 for p in procs):
            sys.exit(f'benchmark_sharded_gc.py: a rank failed (exit codes '
                     f'{[p.returncode for p in procs]})')
        return [json.loads(out.read_text()) for out in outs]


def merge(ranks: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Per engine: the slower rank's times, rank 0's counts (the ranks make the same calls)."""
    merged = {}
    for engine, first in ranks[0].items():
        merged[engine] = dict(first)
        for key in ('iteration_ms', 'sgd_ms', 'sgdgc_ms', 'row_sum_ms'):
            merged[engine][key] = max(rank[engine][key] for rank in ranks)
    return merged


def report(args: argparse.Namespace, numbers: Dict[str, Any]) -> str:
    lines = [f'{args.model}, 2 ranks on gloo (CPU), {args.batch} images of {args.size}x'
             f'{args.size} per rank, medians of {args.steps} steps',
             f'{"engine":<10} {"iteration":>10} {"SGD step":>9} {"SGDGC":>8} {"GC extra":>9}'
             f' {"GC calls":>8} {"GC bytes":>9} {"all-reduce":>10}']
    for engine, n in numbers.items():
        extra = n['sgdgc_ms'] - n['sgd_ms']
        lines.append(f'{engine:<10} {n["iteration_ms"]:>8.1f}ms {n["sgd_ms"]:>7.2f}ms '
                     f'{n["sgdgc_ms"]:>6.2f}ms {extra:>+7.2f}ms {n["gc_calls"]:>8d} '
                     f'{n["gc_bytes"]:>9d} {n["row_sum_ms"]:>8.3f}ms')
    lines.append('GC extra: SGDGC step - SGD step. GC calls / bytes: collectives SGDGC makes in a '
                 'step beyond SGD\'s. all-reduce: time of GC\'s row-sum all-reduce in a step.')
    return '\n'.join(lines)


def main(argv: List[str]) -> None:
    args = parse_args(argv)
    if args.rank is not None:
        rank_main(args)
        return
    numbers = merge(run_ranks(args, argv))
    print(report(args, numbers))
    if args.json is not None:
        args.json.write_text(json.dumps(dict(model=args.model, batch=args.batch, size=args.size,
                                             steps=args.steps, engines=numbers), indent=1))


if __name__ == '__main__':
    main(sys.argv[1:])
