"""Seed sweeps of a baseline config and its GC twin: both trained and tested with N seeds, then
compared as mean +- std, paired GC minus baseline differences and a 95% confidence interval.

    python tools/misc/gc_repeat.py BASELINE_CONFIG GC_CONFIG --seeds N [--work-dir DIR]
        [--cfg-options K=V ...] [--metrics M ...] [--first-seed S] [--force] [--title T]
    python tools/misc/gc_repeat.py configs/demo/lenet5_adamw_digits.py \
        configs/demo/lenet5_adamw_gc_digits.py --seeds 5 --cfg-options train_cfg.max_epochs=4

For each seed S (``--first-seed`` .. + N - 1) and each config, from the repository root:

    tools/train.py CONFIG --work-dir DIR/<config stem>/seed<S> --cfg-options randomness.seed=S K=V..
    tools/test.py CONFIG <last_checkpoint> --work-dir DIR/<config stem>/seed<S>/test \
        [--cfg-options K=V ..]

(the user's ``--cfg-options`` go to both: they may change the model or the data; paths in them
are read from the repository root). What a tool prints is shown and kept beside its run
(``train_output.txt``, ``test/test_output.txt``); ``result.json`` of a run holds the metrics its
test printed (the ``Epoch(test)`` line: every ``name/metric: value``) and its fingerprint. A run
with a ``result.json`` is not trained again (an interrupted sweep resumes) unless ``--force``.

Same seed, same start: the two configs of a pair differ in the optimizer only, so with the same
``randomness.seed`` both start from the same weights and see the same batches. Each training is
checked: ``tools/train.py`` runs unchanged (same arguments, same config) inside
``gc_repeat.py --record-fingerprint FILE tools/train.py ...``, which adds one observing hook
(lowest priority; it reads, consumes no random numbers, changes nothing): a hash of the model's
state_dict just before the first step (after weight init and any pretrained loading), a hash of
the first batch (images after augmentation and sample ids) and a hash of the ids of every batch
(the data order). The sweep stops with an error where the two runs of a seed differ in any.

Outputs in DIR: ``summary.json`` (schema: :func:`build_summary`), the table (:func:`table`) and,
where ``tools/analysis_tools/plot_gc.py`` exists, the training curves in ``DIR/plots``. COCO
metrics are reported in % (x100, as the paper), their -1 ("not applicable") left out; others as
printed (mmpretrain's accuracy is in % already).
"""
import argparse
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[2]
SELF = 'tools/misc/gc_repeat.py'
PLOT_TOOL = 'tools/analysis_tools/plot_gc.py'
VARIANTS = ('baseline', 'gc')
NAMES = {'baseline': 'baseline', 'gc': 'GC'}
RESULT = 'result.json'
FINGERPRINT = 'fingerprint.json'
TRAIN_OUTPUT = 'train_output.txt'
TEST_OUTPUT = 'test_output.txt'
RECORD_FLAG = '--record-fingerprint'
#: what each fingerprint entry covers, for the error message
FINGERPRINT_KEYS = {'weights': 'initial weights', 'first_batch': 'first batch',
                    'data_order': 'data order (sample ids of every batch)'}
METRIC = re.compile(r'(\S+/\S+): (-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)(?=\s|$)')
SAMPLE_IDS = ('img_path', 'img_id', 'sample_idx')
KEPT = ' (the runs finished are kept: the same command resumes)'

Check = Callable[[str, str], None]  # (config, training output): raises SystemExit if wrong


# ---------------------------------------------------------------------------------------------
# the training's fingerprint (runs in the training process)


def _digest_update(digest: Any, value: Any) -> None:
    """Feeds tensors (their dtype, shape and bytes), lists, tuples and dicts into a hash."""
    import torch
    if isinstance(value, torch.Tensor):
        flat = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f'{flat.dtype}{tuple(value.shape)}'.encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    elif isinstance(value, (list, tuple)):
        for item in value:
            _digest_update(digest, item)
    elif isinstance(value, dict):
        for key in sorted(value):
            digest.update(str(key).encode())
            _digest_update(digest, value[key])
    else:
        digest.update(repr(value).encode())


def sample_ids(data_batch: Any) -> List[str]:
    """The ids of a batch's samples (image path, image id or dataset index, whichever the
    pipeline kept in the samples' metainfo)."""
    samples = data_batch.get('data_samples') if isinstance(data_batch, dict) else None
    ids = []
    for sample in samples or []:
        meta = getattr(sample, 'metainfo', {})
        ids.append(next((f'{key}={meta[key]}' for key in SAMPLE_IDS if key in meta), '?'))
    return ids


def make_fingerprint_hook(path: str):
    """An mmengine hook writing ``path`` (JSON) when training ends: hashes of the weights before
    the first step, of the first batch and of every batch's sample ids (built here, so that
    importing this module does not import mmengine)."""
    from mmengine.hooks import Hook

    class FingerprintHook(Hook):
        priority = 'LOWEST'  # after every other hook's before_train (EMA copies, loading, ...)

        def __init__(self) -> None:
            self.record: Dict[str, Any] = {}
            self._order = hashlib.sha256()
            self._iters = 0

        def before_train(self, runner) -> None:
            digest = hashlib.sha256()
            _digest_update(digest, runner.model.state_dict())
            self.record['weights'] = digest.hexdigest()[:16]

        def before_train_iter(self, runner, batch_idx: int, data_batch: Any = None) -> None:
            ids = sample_ids(data_batch)
            if self._iters == 0:
                digest = hashlib.sha256()
                _digest_update(digest, data_batch.get('inputs')
                               if isinstance(data_batch, dict) else data_batch)
                digest.update(';'.join(ids).encode())
                self.record.update(first_batch=digest.hexdigest()[:16], first_batch_ids=ids)
            self._order.update((';'.join(ids) + '|').encode())
            self._iters += 1

        def after_train(self, runner) -> None:
            self.record.update(data_order=self._order.hexdigest()[:16], iters=self._iters)
            Path(path).write_text(json.dumps(self.record, indent=1) + '\n')
            runner.logger.info(f'gc_repeat: fingerprint written to {path}')

    return FingerprintHook()


def train_with_fingerprint(path: str, command: List[str]) -> None:
    """Runs ``command`` (``tools/train.py`` and its arguments) in this process as its own
    ``__main__``, with :func:`make_fingerprint_hook`'s hook added to the Runner it trains."""
    import runpy
    import warnings
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)
    from mmengine.runner import Runner

    original = Runner.train

    def train(self, *args, **kwargs):
        self.register_hook(make_fingerprint_hook(path))
        return original(self, *args, **kwargs)

    Runner.train = train
    sys.argv = list(command)
    sys.path[0] = os.path.dirname(os.path.abspath(command[0]))
    runpy.run_path(command[0], run_name='__main__')


# ---------------------------------------------------------------------------------------------
# metrics


def parse_metrics(output: str) -> Dict[str, float]:
    """The metrics of the last ``Epoch(test)`` line that has any (``name/metric: value``), as
    printed (COCO's as fractions)."""
    for line in reversed(output.splitlines()):
        if 'Epoch(test)' in line:
            found = {key: float(value) for key, value in METRIC.findall(line)}
            if found:
                return found
    return {}


def reported(metric: str, value: float) -> Optional[float]:
    """A printed value as the table reports it: COCO's x100 (None for its -1, "not
    applicable"), others unchanged."""
    if metric.startswith('coco/'):
        return None if value < 0 else 100 * value
    return value


def label(metric: str) -> str:
    """The table's name of a metric: ``coco/bbox_mAP_50`` -> box AP50, ``accuracy/top1`` ->
    top-1, others their own name."""
    coco = re.fullmatch(r'coco/(bbox|segm)_mAP(?:_(\w+))?', metric)
    if coco:
        return {'bbox': 'box', 'segm': 'mask'}[coco[1]] + ' AP' + (coco[2] or '')
    top = re.fullmatch(r'accuracy/top(\d+)', metric)
    return f'top-{top[1]}' if top else metric


def decimals(metric: str) -> int:
    """Decimals shown: 1 for COCO AP (as the paper), 2 otherwise."""
    return 1 if metric.startswith('coco/') else 2


def resolve_metrics(requested: Sequence[str], printed: Sequence[str]) -> List[str]:
    """The printed metric each requested name means (the full name, or the part after the last
    ``/`` where that is unique); one error line for a name that matches none."""
    chosen = []
    for name in requested:
        matches = [m for m in printed if m == name] or \
            [m for m in printed if m.rsplit('/', 1)[-1] == name]
        if len(matches) != 1:
            what = 'matches several' if matches else 'is not among'
            raise SystemExit(f'error: --metrics {name} {what} the metrics tools/test.py printed '
                             f'({", ".join(printed)})')
        chosen.append(matches[0])
    return list(dict.fromkeys(chosen))


# ---------------------------------------------------------------------------------------------
# statistics and the table


def mean_std(values: Sequence[float]) -> Tuple[float, Optional[float]]:
    """Mean and sample standard deviation (ddof=1; None for a single value)."""
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def paired_stats(baseline: Sequence[float], gc: Sequence[float]) -> dict:
    """Both variants' mean and std, the per-seed GC minus baseline differences with their mean,
    std and 95% Student's t interval (n - 1 degrees of freedom; None for one seed), and the
    seeds GC won (higher), tied and lost."""
    from scipy import stats
    n = len(baseline)
    diffs = [round(g - b, 10) for b, g in zip(baseline, gc)]  # no float dust in ties
    mean, std = mean_std(diffs)
    ci = None
    if n > 1:
        half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
        ci = [mean - half, mean + half]
    out = {}
    for variant, values in (('baseline', baseline), ('gc', gc)):
        m, s = mean_std(values)
        out[variant] = dict(mean=m, std=s)
    out['diff'] = dict(per_seed=diffs, mean=mean, std=std, ci95=ci)
    out.update(gc_won=sum(d > 0 for d in diffs), tied=sum(d == 0 for d in diffs),
               gc_lost=sum(d < 0 for d in diffs))
    return out


def build_summary(configs: Dict[str, str], seeds: Sequence[int],
                  per_seed: Dict[str, List[Dict[str, Optional[float]]]],
                  metrics: Optional[Sequence[str]] = None, title: Optional[str] = None) -> dict:
    """The sweep's numbers. ``per_seed[variant][i]`` holds the metrics of ``seeds[i]``, as
    reported (:func:`reported`; None where not applicable). Returns::

        title, configs {baseline, gc}, seeds [..],
        metrics [names summarized, in order], unavailable [names left out: a value missing],
        per_seed {baseline: [{name: value}], gc: [..]},
        stats {name: {label, baseline {mean, std}, gc {mean, std},
                      diff {per_seed [..], mean, std, ci95 [low, high] or null},
                      gc_won, tied, gc_lost}}

    (std is null for one seed). ``metrics``: the names to summarize, else all, in the order
    the first run printed them."""
    n = len(seeds)
    if any(len(per_seed[v]) != n for v in VARIANTS):
        raise ValueError(f'per_seed needs {n} entries per variant')
    if metrics is None:
        metrics = list(dict.fromkeys(k for v in VARIANTS for row in per_seed[v] for k in row))
    shown, unavailable, stats = [], [], {}
    for metric in metrics:
        values = {v: [row.get(metric) for row in per_seed[v]] for v in VARIANTS}
        if any(x is None for v in VARIANTS for x in values[v]):
            unavailable.append(metric)
            continue
        shown.append(metric)
        stats[metric] = dict(label=label(metric), **paired_stats(values['baseline'], values['gc']))
    if title is None:
        title = f'{Path(configs["baseline"]).stem} vs {Path(configs["gc"]).stem}'
    return dict(title=title, configs=dict(configs), seeds=list(seeds), metrics=shown,
                unavailable=unavailable, per_seed={v: per_seed[v] for v in VARIANTS},
                stats=stats)


def seed_span(seeds: Sequence[int]) -> str:
    """``0-4`` for consecutive seeds, ``3`` for one, else the list."""
    if len(seeds) > 1 and list(seeds) == list(range(seeds[0], seeds[0] + len(seeds))):
        return f'{seeds[0]}-{seeds[-1]}'
    return ', '.join(str(s) for s in seeds)


def table(summary: dict) -> str:
    """The summary as text: per metric, mean +- std of each variant, the paired difference's
    mean +- std, its 95% interval and the seeds GC won."""
    seeds = summary['seeds']
    n = len(seeds)
    rows = [('metric', 'baseline', 'GC', 'GC - baseline (paired)', '95% CI', 'GC won')]
    for metric in summary['metrics']:
        st, d = summary['stats'][metric], decimals(metric)

        def cell(mean: float, std: Optional[float], sign: str = '') -> str:
            text = f'{mean:{sign}.{d}f}'
            return text if std is None else f'{text} +- {std:.{d}f}'

        ci = st['diff']['ci95']
        won = f'{st["gc_won"]}/{n}' + (f' ({st["tied"]} tied)' if st['tied'] else '')
        rows.append((st['label'], cell(**st['baseline']), cell(**st['gc']),
                     cell(st['diff']['mean'], st['diff']['std'], '+'),
                     'n/a' if ci is None else f'[{ci[0]:+.{d}f}, {ci[1]:+.{d}f}]', won))
    widths = [max(len(row[i]) for row in rows) + 3 for i in range(len(rows[0]) - 1)]
    lines = [f'{summary["title"]}, {n} seed{"s" * (n != 1)} ({seed_span(seeds)})']
    lines += [''.join(c.ljust(w) for c, w in zip(row, widths)) + row[-1] for row in rows]
    lines += ['mean +- sample std over seeds; paired: GC minus baseline of the same seed;',
              "95% CI: Student's t, n-1 degrees of freedom; GC won: seeds where GC is higher"]
    if summary.get('unavailable'):
        lines.append('not shown (a run has no value): '
                     + ', '.join(label(m) for m in summary['unavailable']))
    return '\n'.join(lines)


# ---------------------------------------------------------------------------------------------
# the runs


def display(path: Path) -> str:
    """A path as the tools (run from the repository root) are given it: relative to the root
    where inside it, else absolute."""
    path = Path(os.path.abspath(path))
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def find_config(config: str) -> str:
    """The config as :func:`display` writes it: from the current directory, else from the
    repository root; one error line where it is in neither."""
    for candidate in (Path(config), ROOT / config):
        if candidate.is_file():
            return display(candidate)
    raise SystemExit(f'error: config {config} not found')


def run_tool(command: List[str], output_file: Path) -> Tuple[int, str]:
    """Runs a tool from the repository root, showing its output as it comes and keeping a copy
    in ``output_file`` (after the command line); returns its exit status and output."""
    shown = '+ ' + ' '.join(command)
    print(shown, flush=True)
    output_file.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    with open(output_file, 'w') as copy:
        copy.write(shown + '\n')
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in process.stdout:
            sys.stdout.write(line)
            copy.write(line)
            lines.append(line)
        code = process.wait()
    sys.stdout.flush()
    return code, ''.join(lines)


def finished(run_dir: Path, config: str, seed: int, options: Sequence[str]) -> Optional[dict]:
    """The record of a run done earlier (its ``result.json``), or None. A record of other
    settings (config, seed, options) is an error, not silently mixed in."""
    path = run_dir / RESULT
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not record.get('metrics') or 'fingerprint' not in record:
        return None
    theirs = (record.get('config'), record.get('seed'), record.get('options'))
    if theirs != (config, seed, list(options)):
        raise SystemExit(f'error: {display(path)} is of another run (config, seed, options: '
                         f'{theirs}): pass --force to train it again, or use another --work-dir')
    return record


def train_and_test(config: str, variant: str, seed: int, run_dir: Path,
                   options: Sequence[str] = (), check: Optional[Check] = None) -> dict:
    """Trains ``config`` with ``seed`` into ``run_dir``, tests its last checkpoint, writes the
    run's ``result.json`` and returns that record. One error line (which run, where its output
    is) where a tool fails."""
    python, where = sys.executable, display(run_dir)
    what = f'{NAMES[variant]} seed {seed} ({config})'
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in (RESULT, FINGERPRINT):
        (run_dir / stale).unlink(missing_ok=True)
    start = time.time()
    code, output = run_tool([python, SELF, RECORD_FLAG, f'{where}/{FINGERPRINT}',
                             'tools/train.py', config, '--work-dir', where, '--cfg-options',
                             f'randomness.seed={seed}', *options], run_dir / TRAIN_OUTPUT)
    if code != 0:
        raise SystemExit(f'error: the training of {what} failed (exit status {code}); its output: '
                         f'{where}/{TRAIN_OUTPUT}{KEPT}')
    if check is not None:
        check(config, output)
    pointer = run_dir / 'last_checkpoint'
    if not pointer.is_file() or pointer.stat().st_mtime < start - 1:
        raise SystemExit(f'error: the training of {what} saved no checkpoint ({where}/'
                         'last_checkpoint missing or older than the run)')
    checkpoint = pointer.read_text().strip()
    try:
        fingerprint = json.loads((run_dir / FINGERPRINT).read_text())
    except (OSError, ValueError):
        raise SystemExit(f'error: the training of {what} wrote no fingerprint '
                         f'({where}/{FINGERPRINT})') from None
    test_dir = run_dir / 'test'
    code, output = run_tool([python, 'tools/test.py', config, checkpoint, '--work-dir',
                             display(test_dir), *(['--cfg-options', *options] if options else [])],
                            test_dir / TEST_OUTPUT)
    if code != 0:
        raise SystemExit(f'error: the test of {what} failed (exit status {code}); its output: '
                         f'{where}/test/{TEST_OUTPUT}{KEPT}')
    metrics = parse_metrics(output)
    if not metrics:
        raise SystemExit(f'error: the test of {what} printed no metrics (an Epoch(test) line '
                         f'with name/metric: value); its output: {where}/test/{TEST_OUTPUT}')
    record = dict(config=config, variant=variant, seed=seed, options=list(options),
                  work_dir=where, checkpoint=checkpoint, metrics=metrics,
                  fingerprint=fingerprint, minutes=round((time.time() - start) / 60, 2))
    (run_dir / RESULT).write_text(json.dumps(record, indent=1) + '\n')
    return record


def compare_fingerprints(seed: int, baseline: dict, gc: dict) -> None:
    """One error line where the two runs of a seed did not start alike."""
    b, g = baseline['fingerprint'], gc['fingerprint']
    differ = [what for key, what in FINGERPRINT_KEYS.items() if b.get(key) != g.get(key)]
    if differ:
        raise SystemExit(
            f'error: seed {seed}: the baseline and GC trainings did not start alike: '
            f'{", ".join(differ)} differ (see "fingerprint" in {baseline["work_dir"]}/{RESULT} and '
            f'{gc["work_dir"]}/{RESULT}); the configs must differ in the optimizer only')


def sweep(baseline: str, gc: str, seeds: Sequence[int], work_dir: Path,
          options: Sequence[str] = (), metrics: Optional[Sequence[str]] = None,
          force: bool = False, title: Optional[str] = None,
          check: Optional[Check] = None) -> dict:
    """Trains and tests both configs with every seed (runs finished earlier are kept unless
    ``force``), checks that each seed's two runs started alike, writes ``work_dir/summary.json``
    (:func:`build_summary`, plus ``cfg_options``, ``runs`` and ``fingerprints``) and returns
    it. ``check(config, output)`` may refuse a training by what it printed."""
    configs = {'baseline': baseline, 'gc': gc}
    records: Dict[str, List[dict]] = {v: [] for v in VARIANTS}
    total, done, chosen = 2 * len(seeds), 0, None
    for seed in seeds:
        for variant in VARIANTS:
            done += 1
            config = configs[variant]
            run_dir = Path(work_dir) / Path(config).stem / f'seed{seed}'
            record = None if force else finished(run_dir, config, seed, options)
            if record is not None:
                print(f'[{done}/{total}] {NAMES[variant]} seed {seed}: finished earlier '
                      f'({display(run_dir / RESULT)}), skipped', flush=True)
            else:
                print(f'[{done}/{total}] {NAMES[variant]} seed {seed}: training {config} into '
                      f'{display(run_dir)}', flush=True)
                record = train_and_test(config, variant, seed, run_dir, options, check)
            if chosen is None:  # a wrong --metrics name stops the sweep at its first run
                chosen = resolve_metrics(metrics, list(record['metrics'])) if metrics else \
                    list(record['metrics'])
            records[variant].append(record)
        compare_fingerprints(seed, records['baseline'][-1], records['gc'][-1])
    weights = [r['fingerprint'].get('weights') for r in records['baseline']]
    if len(seeds) > 1 and len(set(weights)) == 1:
        print('warning: every seed started from the same weights: is randomness.seed used by '
              'these configs?', file=sys.stderr)
    per_seed = {v: [{m: reported(m, r['metrics'][m]) if m in r['metrics'] else None
                     for m in chosen} for r in records[v]] for v in VARIANTS}
    summary = build_summary(configs, seeds, per_seed, chosen, title)
    summary.update(
        cfg_options=list(options),
        runs={v: [r['work_dir'] for r in records[v]] for v in VARIANTS},
        fingerprints=[dict(seed=seed, **{k: b['fingerprint'].get(k) for k in FINGERPRINT_KEYS})
                      for seed, b in zip(seeds, records['baseline'])])
    path = Path(work_dir) / 'summary.json'
    path.write_text(json.dumps(summary, indent=1) + '\n')
    print(f'summary: {display(path)}', flush=True)
    return summary


def plot_runs(runs: Sequence[str], out: Path) -> bool:
    """Draws the runs' training curves with ``tools/analysis_tools/plot_gc.py`` into ``out``
    (runs of one config averaged); where that tool is missing or fails, a warning only.
    Returns whether the plots were written."""
    if not (ROOT / PLOT_TOOL).is_file():
        print(f'warning: {PLOT_TOOL} not found: no plots', file=sys.stderr, flush=True)
        return False
    command = [sys.executable, PLOT_TOOL, *runs, '--out', display(out)]
    print('+ ' + ' '.join(command), flush=True)
    result = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    if result.returncode != 0:
        last = (result.stdout.strip().splitlines() or ['no output'])[-1]
        print(f'warning: {PLOT_TOOL} failed (exit status {result.returncode}: {last}): no plots',
              file=sys.stderr, flush=True)
        return False
    print(f'plots: {display(out)}/', flush=True)
    return True


def training_dirs(summary: dict) -> List[str]:
    """The work dirs of a sweep's trainings, baseline's first."""
    return [run for variant in VARIANTS for run in summary['runs'][variant]]


# ---------------------------------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Train and test a baseline config and its GC twin with several seeds, and '
        'compare them: mean +- std, paired differences, 95% confidence interval')
    parser.add_argument('baseline', help='the baseline config')
    parser.add_argument('gc', help='its GC twin (the same config but the optimizer)')
    parser.add_argument('--seeds', type=int, required=True, metavar='N',
                        help='how many seeds (N >= 1)')
    parser.add_argument('--first-seed', type=int, default=0, metavar='S',
                        help='the seeds are S .. S + N - 1 (default 0)')
    parser.add_argument('--work-dir', metavar='DIR',
                        help='one folder per run, DIR/<config stem>/seed<S>, and summary.json '
                        '(default: work_dirs/gc_repeat/<baseline stem>)')
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='K=V',
                        help='config entries to override in every training and test, as '
                        'tools/train.py takes them (randomness.seed excepted: the sweep sets it)')
    parser.add_argument('--metrics', nargs='+', metavar='M',
                        help='the metrics to report (e.g. coco/bbox_mAP or bbox_mAP, '
                        'accuracy/top1); default: every metric tools/test.py prints')
    parser.add_argument('--force', action='store_true',
                        help='train and test again runs that finished earlier')
    parser.add_argument('--title', help='first line of the table (default: the config names)')
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f'--seeds must be at least 1, got {args.seeds}')
    if args.first_seed < 0:
        parser.error(f'--first-seed must be 0 or more, got {args.first_seed}')
    bad = [option for option in args.cfg_options if '=' not in option]
    if bad:
        parser.error(f'--cfg-options takes KEY=VALUE pairs, got {bad[0]!r}')
    if any(option.split('=', 1)[0].strip() in ('randomness', 'randomness.seed')
           for option in args.cfg_options):
        parser.error('--cfg-options: randomness.seed is what the sweep sets (--first-seed, '
                     '--seeds)')
    return args


def main(argv: Optional[Sequence[str]] = None) -> Optional[dict]:
    """Runs the sweep, prints its table, plots; returns the summary."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [RECORD_FLAG]:  # the training process of one run (see train_and_test)
        if len(argv) < 3:
            raise SystemExit(f'error: {RECORD_FLAG} FILE TRAIN_TOOL [ARGS ...]')
        train_with_fingerprint(argv[1], argv[2:])
        return None
    args = parse_args(argv)
    baseline, gc = find_config(args.baseline), find_config(args.gc)
    if Path(baseline).stem == Path(gc).stem:
        raise SystemExit(f'error: both configs are named {Path(gc).stem}: their runs would share '
                         'one folder; rename one')
    work_dir = Path(args.work_dir or f'{ROOT}/work_dirs/gc_repeat/{Path(baseline).stem}')
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    start = time.time()
    try:
        summary = sweep(baseline, gc, seeds, work_dir, args.cfg_options, args.metrics,
                        args.force, args.title)
    except KeyboardInterrupt:
        raise SystemExit('interrupted: finished runs are kept (result.json); the same command '
                         'resumes') from None
    print(f'\n{table(summary)}\n({(time.time() - start) / 60:.1f} min)')
    plot_runs(training_dirs(summary), work_dir / 'plots')
    return summary


if __name__ == '__main__':
    main()
