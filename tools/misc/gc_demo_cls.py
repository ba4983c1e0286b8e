"""The classification demo (``make demo-cls``): classifiers trained without and with GC on real
data, scikit-learn's handwritten digits, on a CPU, over several seeds.

    python tools/misc/gc_demo_cls.py                      # both settings, 5 seeds each
    python tools/misc/gc_demo_cls.py --seeds 10           # the paper's number of runs
    python tools/misc/gc_demo_cls.py --settings lenet5-adamw

Each setting is a pair of configs in ``configs/demo/`` (a baseline and its GC twin, which differ
in the optimizer type only). For every seed both are trained in this process by mmengine's Runner
(mmpretrain's ImageClassifier, pipeline and Accuracy metric) with ``randomness=dict(seed=seed)``,
so the two start from the same weights and see the same batches; a hook records fingerprints of
both, which the tool checks. Each run writes ``result.json`` (top-1 on the 540 held-out digits,
mean training loss per epoch, fingerprints) beside its logs; the table printed at the end (and
``summary.json``) is computed from those files: top-1 mean +- std over seeds, training loss at a
few epochs (mean over seeds), and the paired GC minus baseline difference of each seed.
"""
import argparse
import contextlib
import hashlib
import io
import json
import logging
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = ('baseline', 'gc')


@dataclass(frozen=True)
class Setting:
    """One model / optimizer pair of the demo."""
    title: str
    baseline: str
    gc: str
    baseline_name: str
    gc_name: str

    def config(self, variant: str) -> str:
        return getattr(self, variant)

    def name(self, variant: str) -> str:
        return getattr(self, f'{variant}_name')


SETTINGS: Dict[str, Setting] = {
    'resnet18-sgd': Setting(
        'ResNet-18 with BN (CIFAR stem, 16 base channels), 16x16 input, SGD momentum 0.9',
        'configs/demo/resnet18-w16_sgd_digits.py', 'configs/demo/resnet18-w16_sgd_gc_digits.py',
        'SGD', 'SGDGC'),
    'lenet5-adamw': Setting(
        'LeNet-5 (tanh, no BN), 32x32 input, AdamW',
        'configs/demo/lenet5_adamw_digits.py', 'configs/demo/lenet5_adamw_gc_digits.py',
        'AdamW', 'AdamWGC'),
}


# ---------------------------------------------------------------------------------------------
# one training


def fingerprint(tensors: Sequence) -> str:
    """A sha256 of tensors' values (in order), as a short hex string."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def make_recorder():
    """A hook recording what the table needs (built here, so that importing this module does not
    import mmengine): the weights' fingerprint before the first step, the mean training loss of
    each epoch, a fingerprint of every batch seen (inputs, labels, sample indices) and the
    validation metrics."""
    from mmengine.hooks import Hook

    class RunRecorder(Hook):
        priority = 'VERY_LOW'

        def __init__(self) -> None:
            self.initial_weights: Optional[str] = None
            self.epoch_losses: List[float] = []
            self.metrics: Dict[str, float] = {}
            self._data = hashlib.sha256()
            self._loss_sum, self._iters = 0.0, 0

        def before_train(self, runner) -> None:
            self.initial_weights = fingerprint(runner.model.state_dict().values())

        def before_train_epoch(self, runner) -> None:
            self._loss_sum, self._iters = 0.0, 0

        def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                             outputs=None) -> None:
            loss = outputs['loss']
            self._loss_sum += float(loss.detach() if hasattr(loss, 'detach') else loss)
            self._iters += 1
            for image, sample in zip(data_batch['inputs'], data_batch['data_samples']):
                self._data.update(image.numpy().tobytes())
                self._data.update(f'{sample.sample_idx}:{int(sample.gt_label)};'.encode())

        def after_train_epoch(self, runner) -> None:
            self.epoch_losses.append(self._loss_sum / max(self._iters, 1))

        def after_val_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
            self.metrics = {key: float(value) for key, value in (metrics or {}).items()}

        @property
        def data_order(self) -> str:
            return self._data.hexdigest()[:16]

    return RunRecorder()


class Discard(io.TextIOBase):
    """A text stream that drops what it is given (the Runners' console logs: their log files
    keep everything)."""

    def write(self, text: str) -> int:
        return len(text)


def run_config(config: str, seed: int, work_dir: Path, epochs: Optional[int] = None,
               train_size: Optional[int] = None) -> dict:
    """Trains one config with one seed in this process (a fresh Runner, whose log goes to its
    log file only), writes ``work_dir/result.json`` and returns that record."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    cfg = Config.fromfile(str(ROOT / config))
    cfg.work_dir = str(work_dir)
    cfg.randomness = dict(seed=seed, deterministic=False)
    cfg.experiment_name = f'{Path(config).stem}_seed{seed}_{os.getpid()}_{time.time_ns()}'
    cfg.default_hooks.checkpoint = None       # the table needs no checkpoints
    if epochs is not None:
        cfg.train_cfg.max_epochs = epochs
        cfg.train_cfg.val_interval = epochs
        schedulers = cfg.param_scheduler
        for scheduler in (schedulers if isinstance(schedulers, list) else [schedulers]):
            if 'T_max' in scheduler:
                scheduler.T_max = epochs
    if train_size is not None:
        cfg.train_dataloader.dataset.indices = train_size
    recorder = make_recorder()
    start = time.perf_counter()
    with contextlib.redirect_stdout(Discard()):   # the logger's console handler writes here
        runner = Runner.from_cfg(cfg)
        runner.register_hook(recorder)
        log_file = Path(runner.log_dir) / f'{runner.timestamp}.log'
        try:
            runner.train()
        finally:
            for handler in list(runner.logger.handlers):
                if isinstance(handler, logging.FileHandler):
                    handler.close()
                    runner.logger.removeHandler(handler)
    seconds = time.perf_counter() - start
    if 'accuracy/top1' not in recorder.metrics:
        raise SystemExit(f'error: {config} seed {seed}: no accuracy/top1 after training '
                         f'(log: {log_file})')
    record = dict(config=config, seed=seed, top1=recorder.metrics['accuracy/top1'],
                  epoch_losses=recorder.epoch_losses, initial_weights=recorder.initial_weights,
                  data_order=recorder.data_order, seconds=round(seconds, 2),
                  epochs=cfg.train_cfg.max_epochs, log=str(log_file))
    (work_dir / 'result.json').write_text(json.dumps(record, indent=1) + '\n')
    return record


# ---------------------------------------------------------------------------------------------
# the table


def mean_std(values: Sequence[float]) -> tuple:
    """Mean and sample standard deviation (n - 1; 0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def loss_epochs(epochs: int) -> List[int]:
    """The (1-based) epochs whose training loss the table shows: first, quarter, half, last."""
    return sorted({1, max(1, round(epochs / 4)), max(1, round(epochs / 2)), epochs})


def summarize(setting: str, runs: Dict[str, List[dict]]) -> dict:
    """The numbers of one setting's table from its runs (``runs[variant]``, one per seed, in the
    same seed order). Refuses pairs that did not start from the same weights or data."""
    baseline, gc = runs['baseline'], runs['gc']
    for b, g in zip(baseline, gc):
        if b['seed'] != g['seed']:
            raise ValueError(f'{setting}: runs out of order (seed {b["seed"]} vs {g["seed"]})')
        for key, what in (('initial_weights', 'weights'), ('data_order', 'batches')):
            if b[key] != g[key]:
                raise SystemExit(f'error: {setting} seed {b["seed"]}: the baseline and GC runs '
                                 f'did not start from the same {what} ({b[key]} vs {g[key]})')
    epochs = baseline[0]['epochs']
    shown = loss_epochs(epochs)
    summary = dict(setting=setting, title=SETTINGS[setting].title, epochs=epochs,
                   seeds=[r['seed'] for r in baseline], loss_epochs=shown)
    for variant in VARIANTS:
        top1 = [r['top1'] for r in runs[variant]]
        summary[variant] = dict(
            name=SETTINGS[setting].name(variant), top1=top1, top1_mean_std=mean_std(top1),
            loss=[mean_std([r['epoch_losses'][e - 1] for r in runs[variant]])[0]
                  for e in shown])
    diffs = [g['top1'] - b['top1'] for b, g in zip(baseline, gc)]
    summary['diff'] = dict(
        top1=diffs, top1_mean_std=mean_std(diffs),
        loss=[mean_std([g['epoch_losses'][e - 1] - b['epoch_losses'][e - 1]
                        for b, g in zip(baseline, gc)])[0] for e in shown],
        wins=sum(d > 0 for d in diffs), ties=sum(d == 0 for d in diffs),
        losses=sum(d < 0 for d in diffs))
    return summary


def table(summary: dict) -> str:
    """One setting's block of the final table."""
    shown = summary['loss_epochs']
    loss_head = ''.join(f'{"ep " + str(e):>8s}' for e in shown)
    header = f'{"":18s}{"top-1 (%)":>17s}   training loss at{loss_head}'
    n = len(summary['seeds'])
    lines = [f'{summary["title"]}, {summary["epochs"]} epochs, {n} seed{"s" * (n > 1)}',
             header, '-' * len(header)]
    pad = ' ' * len('   training loss at')
    for variant in VARIANTS:
        part = summary[variant]
        mean, std = part['top1_mean_std']
        label = part['name'] + (' (baseline)' if variant == 'baseline' else '')
        losses = ''.join(f'{v:8.4f}' for v in part['loss'])
        lines.append(f'{label:18s}{mean:9.2f} +- {std:4.2f}{pad}{losses}')
    diff = summary['diff']
    mean, std = diff['top1_mean_std']
    losses = ''.join(f'{v:+8.4f}' for v in diff['loss'])
    lines.append(f'{"GC - baseline":18s}{mean:+9.2f} +- {std:4.2f}{pad}{losses}')
    lines.append('  paired top-1 difference per seed: '
                 + ' '.join(f'{d:+.2f}' for d in diff['top1'])
                 + f'; GC higher in {diff["wins"]}/{n}, equal in {diff["ties"]}, '
                 f'lower in {diff["losses"]}')
    return '\n'.join(lines)


def weak_runs(summaries: Dict[str, dict], min_top1: float) -> List[str]:
    """The runs ending below ``min_top1``, as `"<setting> <optimizer> seed <N>: <top-1>"`."""
    return [f'{key} {summary[variant]["name"]} seed {seed}: {top1:.2f}'
            for key, summary in summaries.items() for variant in VARIANTS
            for seed, top1 in zip(summary['seeds'], summary[variant]['top1'])
            if top1 < min_top1]


# ---------------------------------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Train digit classifiers (scikit-learn load_digits) through mmpretrain '
        'without and with Gradient Centralization, over several seeds, and compare them.')
    parser.add_argument('--seeds', type=int, default=5,
                        help='seeds per variant, 0 .. N-1 (default 5; the paper averages 10)')
    parser.add_argument('--settings', nargs='+', choices=sorted(SETTINGS),
                        default=list(SETTINGS), help='which model / optimizer pairs to train')
    parser.add_argument('--work-dir', default='work_dirs/demo_cls',
                        help='one folder per training (logs, result.json) and summary.json')
    parser.add_argument('--epochs', type=int, default=None,
                        help="train this many epochs instead of the configs' (short checks)")
    parser.add_argument('--train-size', type=int, default=None,
                        help='train on the first N images of the training split only (tests)')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch threads (default 1: these small models gain little from '
                        'more, and lose much when the cores are shared)')
    parser.add_argument('--min-top1', type=float, default=50.0,
                        help='exit with an error (after the table) if a run ends below this '
                        'top-1 (%%): a sign that a model did not learn (default 50)')
    args = parser.parse_args(argv)
    args.settings = list(dict.fromkeys(args.settings))       # each once, in the order given
    for name in ('seeds', 'epochs', 'train_size', 'threads'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f'--{name.replace("_", "-")} must be at least 1, got {value}')
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Runs the demo; returns the summaries it printed (also written to ``summary.json``)."""
    args = parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    # setuptools' deprecation of pkg_resources, which mmengine imports: noise, once per Runner
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)
    work_root = Path(args.work_dir)
    if not work_root.is_absolute():
        work_root = ROOT / work_root
    seeds = list(range(args.seeds))
    total = len(args.settings) * len(seeds) * len(VARIANTS)
    start = time.perf_counter()
    print(f'{total} trainings: {", ".join(args.settings)} x {{baseline, GC}} x seeds '
          f'{seeds[0]}..{seeds[-1]}, {args.threads} torch thread(s); logs under {work_root}/',
          flush=True)
    summaries, done = {}, 0
    for key in args.settings:
        setting = SETTINGS[key]
        runs: Dict[str, List[dict]] = {variant: [] for variant in VARIANTS}
        for seed in seeds:
            for variant in VARIANTS:
                config = setting.config(variant)
                run_dir = work_root / Path(config).stem / f'seed{seed}'
                record = run_config(config, seed, run_dir, args.epochs, args.train_size)
                runs[variant].append(record)
                done += 1
                print(f'[{done:2d}/{total}] {key:13s} {setting.name(variant):8s} seed {seed}  '
                      f'top-1 {record["top1"]:6.2f}  final loss '
                      f'{record["epoch_losses"][-1]:.4f}  {record["seconds"]:5.1f} s', flush=True)
        summaries[key] = summarize(key, runs)
    minutes = (time.perf_counter() - start) / 60
    print(f'\nDigits (scikit-learn load_digits: 1,257 train / 540 test, 8x8 grey), top-1 on the '
          f'test split, mean +- std over seeds; training loss: mean over seeds; '
          f'{minutes:.1f} min\n')
    print('\n\n'.join(table(summary) for summary in summaries.values()))
    (work_root / 'summary.json').write_text(json.dumps(summaries, indent=1) + '\n')
    print(f'\nper-run results: {work_root}/<config>/seed<N>/result.json; '
          f'summary: {work_root}/summary.json')
    weak = weak_runs(summaries, args.min_top1)
    if weak:
        raise SystemExit(f'error: a model did not learn (top-1 below {args.min_top1}): '
                         + ', '.join(weak))
    return summaries


if __name__ == '__main__':
    main()
    sys.exit(0)
