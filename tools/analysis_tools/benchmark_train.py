"""Times whole training iterations with and without Gradient Centralization, side by side.

Builds two mmengine Runners from a baseline config and its GC twin (default: the Mask R-CNN demo
pair, which differ only in SGD -> SGDGC) with the same seed, so both models start with the same
weights, on a synthetic COCO dataset written to a temporary folder. Then, batch by batch, it runs
one ``model.train_step`` (data preprocessing, forward, backward, optimizer step) of each variant
on a copy of the same batch, alternating which goes first, after a warm-up. Before each pair the
GC model gets the baseline's weights (each optimizer keeps its own state), so that forward and
backward do the same work in both and only the optimizer step differs. It reports the median
iteration and optimizer-step times, and the median over batches of GC / baseline on the same
batch: the end-to-end cost of GC on a training iteration.

    python tools/analysis_tools/benchmark_train.py                       # CPU, Mask R-CNN pair
    python tools/analysis_tools/benchmark_train.py --model faster --iters 10
    python tools/analysis_tools/benchmark_train.py BASELINE_CONFIG GC_CONFIG --device cuda
"""
import argparse
import contextlib
import copy
import importlib.util
import io
import os
import statistics
import tempfile
import time
import types
import warnings
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

# As tools/train.py: setuptools' notice about mmengine's `import pkg_resources` is only noise.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)

import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmgc  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def load_tool(relative: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(Path(relative).stem, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DEMOS = load_tool('tools/misc/gc_demo.py').CONFIGS  # model -> (name, baseline, gc, metrics)
make_dataset = load_tool('tools/dataset_converters/synthetic_coco.py').make_dataset


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Benchmark training iterations with and '
                                     'without GC')
    parser.add_argument('configs', nargs='*', metavar='CONFIG',
                        help='baseline config and its GC twin (default: the --model demo pair)')
    parser.add_argument('--model', choices=sorted(DEMOS),
                        help='demo pair configs/demo/<model>-rcnn_r18_fpn[_gc]_synthetic.py '
                        '(default mask)')
    parser.add_argument('--data-root', help='synthetic COCO dataset folder, written if it has '
                        'no annotations (default: a temporary folder)')
    parser.add_argument('--warmup', type=int, default=3, help='untimed pairs first')
    parser.add_argument('--iters', type=int, default=20, help='timed pairs')
    parser.add_argument('--work-dir', help='runner work dirs (default: a temporary folder)')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--seed', type=int, default=0, help='runner seed, the same for both')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of both configs, as in tools/train.py, e.g. '
                        'optim_wrapper.optimizer.fused=True (torch\'s fused SGD step as baseline)')
    args = parser.parse_args(argv)
    if args.configs and args.model:
        parser.error('give either two configs or --model, not both')
    if len(args.configs) not in (0, 2):
        parser.error('give two configs: the baseline and its GC twin')
    if not args.configs:
        args.configs = list(DEMOS[args.model or 'mask'][1:3])
    if args.warmup < 0 or args.iters < 1:
        parser.error('--warmup must be >= 0 and --iters >= 1')
    return args


def load_config(path: str, data_root: str, work_dir: Path, seed: int,
                options: Optional[dict] = None) -> Config:
    cfg = Config.fromfile(path if Path(path).exists() else str(ROOT / path))
    if options:
        cfg.merge_from_dict(options)
    cfg.train_dataloader.dataset.data_root = data_root.rstrip('/') + '/'
    if cfg.model.get('backbone') is not None:
        cfg.model.backbone.init_cfg = None  # nothing to download (the demo configs have None)
    for key in ('val', 'test'):  # training only: no evaluation is built
        cfg[f'{key}_dataloader'] = cfg[f'{key}_cfg'] = cfg[f'{key}_evaluator'] = None
    cfg.work_dir = str(work_dir)
    if cfg.get('visualizer') is not None:  # one instance each (mmengine's are named)
        cfg.visualizer.name = f'benchmark_train_{work_dir.name}'
    cfg.randomness = dict(seed=seed)
    cfg.log_level = 'WARNING'
    return cfg


class Variant:
    """One runner's model, optim wrapper and iteration-based LR schedulers, and its timings."""

    def __init__(self, name: str, cfg: Config, device: str, sync: Callable[[], None]) -> None:
        self.name, self.sync = name, sync
        self.runner = Runner.from_cfg(cfg)  # seeds torch: the same seed, the same weights
        self.model = self.runner.model.to(device)
        self.model.init_weights()
        self.model.train()
        self.wrapper = self.runner.optim_wrapper = self.runner.build_optim_wrapper(
            cfg.optim_wrapper)
        self.iteration: List[float] = []
        self.step: List[float] = []
        self.loss: List[float] = []
        step = self.wrapper.step

        def timed_step(wrapper, **kwargs) -> None:  # OptimWrapper.update_params calls it
            sync()
            start = time.perf_counter()
            step(**kwargs)
            sync()
            self._step = time.perf_counter() - start

        # A method, before the LR schedulers wrap it (they count the steps).
        self.wrapper.step = types.MethodType(timed_step, self.wrapper)
        self.schedulers = [s for s in self.runner.build_param_scheduler(cfg.param_scheduler)
                           if not s.by_epoch] if cfg.get('param_scheduler') else []

    @property
    def optimizer(self) -> str:
        return f'{type(self.wrapper).__name__}({type(self.wrapper.optimizer).__name__})'

    @property
    def gc(self) -> bool:
        return any(type(o).__module__.split('.')[0] == 'mmgc'
                   for o in (self.wrapper, self.wrapper.optimizer))

    def run(self, batch: dict, seed: int, timed: bool) -> None:
        data = copy.deepcopy(batch)
        torch.manual_seed(seed)  # the same sampling (RPN, R-CNN) for both variants
        self._step = float('nan')
        self.sync()
        start = time.perf_counter()
        log_vars = self.model.train_step(data, self.wrapper)
        self.sync()
        elapsed = time.perf_counter() - start
        for scheduler in self.schedulers:  # as ParamSchedulerHook after each iteration
            scheduler.step()
        if timed:
            self.iteration.append(elapsed)
            self.step.append(self._step)
            self.loss.append(log_vars['loss'].item())


def batches(loader, count: int) -> Iterator[dict]:
    """``count`` batches, going through the loader again if it has fewer."""
    while True:
        for batch in loader:
            if count == 0:
                return
            count -= 1
            yield batch


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa)


@torch.no_grad()
def copy_weights(source: torch.nn.Module, target: torch.nn.Module) -> None:
    for s, t in zip(source.state_dict().values(), target.state_dict().values()):
        t.copy_(s)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no CUDA device is available')
    sync = torch.cuda.synchronize if args.device == 'cuda' else (lambda: None)
    with tempfile.TemporaryDirectory(prefix='benchmark_train_') as tmp:
        work_dir = Path(args.work_dir or tmp)
        data_root = args.data_root or str(Path(tmp) / 'synthetic_coco')
        cfgs = [load_config(c, data_root, work_dir / tag, args.seed, args.cfg_options)
                for c, tag in zip(args.configs, ('baseline', 'gc'))]
        batch_size = cfgs[0].train_dataloader.batch_size
        if not (Path(data_root) / 'annotations' / 'instances_train.json').exists():
            make_dataset(data_root, train=(args.warmup + args.iters) * batch_size, val=1,
                         seed=args.seed)
        # Building the LR schedulers builds the train loop and its dataloader: pycocotools prints.
        with contextlib.redirect_stdout(io.StringIO()):
            runs = [Variant(name, cfg, args.device, sync)
                    for name, cfg in zip(('baseline', 'GC'), cfgs)]
            loader = runs[0].runner.train_dataloader
        identical = same_weights(runs[0].model, runs[1].model)
        load = os.getloadavg()[0]  # other processes on the CPUs make the timings noisy
        start = time.perf_counter()
        for index, batch in enumerate(batches(loader, args.warmup + args.iters)):
            # The same weights in both: forward and backward do the same work (the number of
            # positive RoIs, say, depends on them), and only the optimizer step differs.
            copy_weights(runs[0].model, runs[1].model)
            order = runs if index % 2 == 0 else runs[::-1]
            for variant in order:
                variant.run(batch, args.seed + index, timed=index >= args.warmup)
        seconds = time.perf_counter() - start

    base, gc = runs
    params = [p for p in base.model.parameters() if p.requires_grad]
    ms: Dict[str, Dict[str, float]] = {
        v.name: dict(iteration=statistics.median(v.iteration) * 1e3,
                     fwd_bwd=statistics.median(i - s for i, s in zip(v.iteration, v.step)) * 1e3,
                     step=statistics.median(v.step) * 1e3) for v in runs}
    paired = [g / b for g, b in zip(gc.iteration, base.iteration)]
    q1, _, q3 = statistics.quantiles(paired, n=4, method='inclusive') if len(paired) > 1 \
        else paired * 3
    device = torch.cuda.get_device_name() if args.device == 'cuda' else 'CPU'
    print(f'device: {args.device} ({device}, {torch.get_num_threads()} threads)  '
          f'torch {torch.__version__}  mmgc {mmgc.__version__}')
    for v, config in zip(runs, args.configs):
        print(f'{v.name + ":":10s} {config}  optimizer: {v.optimizer} '
              f'({type(v.wrapper.optimizer).__module__}), GC {"on" if v.gc else "off"}')
    if args.cfg_options:
        print(f'cfg options (both): {args.cfg_options}')
    print(f'trainable tensors: {len(params)}  values: {sum(p.numel() for p in params) / 1e6:.1f} M'
          f'  identical initial weights: {"yes" if identical else "NO"}')
    print(f'{args.iters} interleaved pairs (same batch of {batch_size} and same weights, '
          f'alternating order) after '
          f'{args.warmup} warm-up pairs, {seconds:.1f} s (load average {load:.1f} before, on '
          f'{os.cpu_count()} CPUs); median per iteration')
    header = (f'{"variant":9s} {"optimizer":22s} {"iteration ms":>12s} {"fwd+bwd ms":>11s} '
              f'{"step ms":>8s} {"step share":>10s} {"ratio":>7s} {"loss first->last":>17s}')
    print(header)
    print('-' * len(header))
    for v in runs:
        m = ms[v.name]
        losses = f'{v.loss[0]:.3f}->{v.loss[-1]:.3f}'
        print(f'{v.name:9s} {v.optimizer:22s} {m["iteration"]:12.2f} {m["fwd_bwd"]:11.2f} '
              f'{m["step"]:8.2f} {m["step"] / m["iteration"]:10.1%} '
              f'{m["iteration"] / ms["baseline"]["iteration"]:7.3f} {losses:>17s}')
    print('fwd+bwd: the iteration less the step (data preprocessing, forward, backward, '
          'zero_grad); ratio: median iteration over the baseline\'s')
    extra = ms['GC']['step'] - ms['baseline']['step']
    print(f'GC step cost: {extra:+.2f} ms per iteration = '
          f'{extra / ms["baseline"]["iteration"]:+.2%} of a baseline iteration')
    print(f'training iteration with GC / without (median of {len(paired)} same-batch pairs): '
          f'{statistics.median(paired):.3f}  (quartiles {q1:.3f} .. {q3:.3f}; target <= 1.01)')


if __name__ == '__main__':
    main()
