"""What ``GCStatsHook`` costs a training run: the time it spends, against the iterations'.

Trains a demo detector (default: the Mask R-CNN demo, GC twin) for ``--iters`` iterations on the
synthetic COCO dataset with ``GCStatsHook(interval=INTERVAL)`` and times, apart, every call of
the hook (reading the gradients inside the step, and the logging after it) and every whole
iteration. It prints the median iteration, the median time of one measurement, and the share of
the run's time the hook took.

    python tools/analysis_tools/benchmark_gc_stats.py                      # interval 50
    python tools/analysis_tools/benchmark_gc_stats.py --model faster --iters 200 --by-layer
"""
import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)

from mmengine.config import Config  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmgc  # noqa: E402,F401  (registers the hook and the optimizers)
from mmgc.hooks import GCStatsHook  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {'mask': 'configs/demo/mask-rcnn_r18_fpn_gc_synthetic.py',
           'faster': 'configs/demo/faster-rcnn_r18_fpn_gc_synthetic.py'}


class IterationClock(Hook):
    """Wall time of every training iteration, hooks included."""
    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self.times: List[float] = []
        self._start = 0.0

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        self._start = time.perf_counter()

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None,
                         outputs: Any = None) -> None:
        self.times.append(time.perf_counter() - self._start)


def timed(spent: Dict[int, float], iteration: Callable[[], int],
          method: Callable) -> Callable:
    """``method`` with its time added to ``spent[current iteration]``."""
    def call(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            index = iteration()
            spent[index] = spent.get(index, 0.0) + time.perf_counter() - start
    return call


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Time GCStatsHook against training iterations')
    parser.add_argument('--model', choices=sorted(CONFIGS), default='mask')
    parser.add_argument('--interval', type=int, default=50, help='the hook\'s interval')
    parser.add_argument('--iters', type=int, default=150, help='training iterations')
    parser.add_argument('--by-layer', action='store_true', help='per-parameter numbers too')
    parser.add_argument('--data-root', default='data/synthetic_coco',
                        help='synthetic COCO dataset (written there if missing)')
    args = parser.parse_args(argv)
    if args.interval < 1 or args.iters < 1:
        parser.error('--interval and --iters must be >= 1')
    return args


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    data_root = Path(args.data_root)
    if not (data_root / 'annotations' / 'instances_train.json').exists():
        sys.path.insert(0, str(ROOT / 'tools' / 'dataset_converters'))
        import synthetic_coco
        synthetic_coco.make_dataset(str(data_root))
    cfg = Config.fromfile(str(ROOT / CONFIGS[args.model]))
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = str(data_root) + '/'
    cfg.model.backbone.init_cfg = None
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=args.iters, val_interval=10**9)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.test_cfg = cfg.test_dataloader = cfg.test_evaluator = None
    cfg.param_scheduler = None
    cfg.custom_hooks = [dict(type='GCStatsHook', interval=args.interval,
                             by_layer=args.by_layer)]
    cfg.default_hooks.logger.interval = args.interval
    cfg.default_hooks.checkpoint = None
    cfg.log_level = 'WARNING'
    with tempfile.TemporaryDirectory() as work_dir:
        cfg.work_dir = work_dir
        runner = Runner.from_cfg(cfg)
        clock = IterationClock()
        runner.register_hook(clock)
        hook = next(h for h in runner.hooks if isinstance(h, GCStatsHook))
        spent: Dict[int, float] = {}

        def iteration() -> int:
            return runner.iter
        hook._capture = timed(spent, iteration, hook._capture)
        hook.after_train_iter = timed(spent, iteration, hook.after_train_iter)
        hook.before_train_iter = timed(spent, iteration, hook.before_train_iter)
        start = time.perf_counter()
        runner.train()
        total = time.perf_counter() - start
    iters = clock.times[1:]  # the first builds lazily
    measured = [spent[i] for i in sorted(spent) if (i + 1) % args.interval == 0]
    idle = [spent[i] for i in sorted(spent) if (i + 1) % args.interval != 0]
    median_iter = statistics.median(iters)
    hook_total = sum(spent.values())
    print(f'{args.model} demo (GC twin), {args.iters} iterations, GCStatsHook(interval='
          f'{args.interval}, by_layer={args.by_layer}), {len(measured)} measurements, '
          f'{total:.1f} s in all')
    print(f'median iteration                     {1000 * median_iter:9.2f} ms')
    if measured:
        per = statistics.median(measured)
        print(f'median measurement (step + logging)  {1000 * per:9.2f} ms')
        print(f'  per iteration at this interval     {1000 * per / args.interval:9.3f} ms = '
              f'{100 * per / args.interval / median_iter:.3f}% of an iteration')
    print(f'hook on other iterations (median)    {1000 * statistics.median(idle or [0]):9.4f} '
          'ms')
    print(f'hook, all of it, over the run        {hook_total:9.3f} s = '
          f'{100 * hook_total / sum(clock.times):.3f}% of the iterations\' time')


if __name__ == '__main__':
    main()
