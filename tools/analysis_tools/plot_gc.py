"""Plots the logs of mmengine training runs side by side (e.g. baseline against GC), as PNGs.

    python tools/analysis_tools/plot_gc.py RUN [RUN ...] --out DIR [--labels L [L ...]] [--title T]
    python tools/analysis_tools/plot_gc.py work_dirs/demo_cls/lenet5_adamw_digits/seed* \
        work_dirs/demo_cls/lenet5_adamw_gc_digits/seed* --out plots/lenet5

A RUN is a work dir (its newest ``<timestamp>/vis_data/scalars.json`` with training records is
read; a test run's is passed over), a ``<timestamp>`` or ``vis_data`` folder, or a log file
itself (``scalars.json`` or ``<timestamp>.json``: one JSON object per line, as mmengine's
LocalVisBackend writes them). Unreadable lines (a crashed run's last one) are skipped with a
warning.

Runs sharing a label form a variant, drawn as the mean over its runs on the x values they all
have, with a band: +- one sample standard deviation from 3 runs, min-max for 2. A run's label is
``--labels``' entry, else its work dir's name (the parent's where that is ``seed<N>``).

Figures, each written only where some run has its data: ``loss.png`` (``loss`` and its ``loss_*``
parts against the iteration), ``lr.png``, ``val.png`` (each validation metric against the
epoch, or the iteration for iteration-based runs; COCO's -1 "not applicable" metrics left out),
``gc.png`` (GCStatsHook's global ``gc/*`` scalars, at their ``gc/iter``, repeats dropped) and
``gc_layers.png`` (a per-layer ``gc/<param>/<quantity>``, ``mean_energy`` where logged, for up
to 12 layers, one panel per variant). ``curves.json`` holds every plotted curve's numbers.
"""
import argparse
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Dict, List, NoReturn, Optional, Sequence, Tuple

PROG = 'plot_gc.py'
TIMESTAMP = re.compile(r'\d{8}_\d{6}')
SEED = re.compile(r'seed\d+')
NOT_METRICS = {'step', 'iter', 'epoch', 'time', 'data_time', 'memory', 'lr', 'base_lr'}
# Shared panels of gc.png: (title, [(key, what the line shows or None, line style), ...]).
GC_PANELS = [
    ('gradient norm: before GC (solid), after (dashed)',
     [('gc/grad_norm', 'before GC', '-'), ('gc/grad_norm_gc', 'after GC', '--')]),
    ('largest |gradient| entry: before GC (solid), after (dashed)',
     [('gc/grad_max', 'before GC', '-'), ('gc/grad_max_gc', 'after GC', '--')]),
    ('gc/mean_energy', [('gc/mean_energy', None, '-')]),
    ('gc/weight_mean_drift', [('gc/weight_mean_drift', None, '-')]),
]
MAX_LAYERS = 12
DPI = 100

Series = Dict[float, float]  # x -> y


def fail(message: str) -> NoReturn:
    """Ends the run with one line on stderr and exit status 2, as argparse does."""
    print(f'{PROG}: error: {message}', file=sys.stderr)
    sys.exit(2)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description='Plot mmengine training runs, '
                                     'overlaid per variant, with a band over seeds')
    parser.add_argument('runs', nargs='+', metavar='RUN',
                        help='work dir, <timestamp> or vis_data folder, or scalars.json / '
                        '<timestamp>.json file')
    parser.add_argument('--out', required=True, metavar='DIR', help='folder for the figures')
    parser.add_argument('--labels', nargs='+', metavar='L',
                        help='one label per RUN; runs with the same label are one variant')
    parser.add_argument('--title', help='put in front of every figure title')
    args = parser.parse_args(argv)
    if args.labels is not None and len(args.labels) != len(args.runs):
        fail(f'--labels gives {len(args.labels)} labels for {len(args.runs)} runs: give one '
             'per RUN')
    return args


# ---------------------------------------------------------------------------------------------
# reading the logs


class Log:
    """One run's records: training lines and validation lines (JSON objects)."""

    def __init__(self, path: Path, train: List[dict], val: List[dict], bad: List[int]) -> None:
        self.path, self.train, self.val, self.bad = path, train, val, bad


def is_train(record: dict) -> bool:
    return any(key in record for key in ('lr', 'base_lr', 'loss', 'iter'))


def json_records(text: str) -> Tuple[List[dict], List[int]]:
    """The JSON objects of a one-object-per-line log (mmengine's ``scalars.json``), and the
    numbers of the other non-empty lines (a crashed run's cut last line, say)."""
    records, bad = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            bad.append(number)
    return records, bad


def read_log(path: Path) -> Log:
    """Parses a one-object-per-line log; notes the numbers of the lines that are not objects."""
    train, val = [], []
    try:
        text = path.read_text(errors='replace')
    except OSError as error:
        fail(f'{path}: cannot read it ({error.strerror or error})')
    records, bad = json_records(text)
    for record in records:
        record = {k: float(v) for k, v in record.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if is_train(record):
            train.append(record)
        elif 'step' in record:  # a test run's metrics carry no step: not plotted
            val.append(record)
    return Log(path, train, val, bad)


def find_log(run: str) -> Log:
    """The log a RUN names (see the module docstring); fails where there is none to plot."""
    path = Path(run)
    if not path.exists():
        fail(f'{run}: no such file or directory')
    if path.is_file():
        log = read_log(path)
        if not log.train:
            fail(f'{run}: holds no training records (lines with lr / loss / iter)')
        return log
    candidates = [path / 'scalars.json', path / 'vis_data' / 'scalars.json']
    stamps = sorted((p for p in path.iterdir() if p.is_dir() and TIMESTAMP.fullmatch(p.name)),
                    key=lambda p: p.name, reverse=True)
    candidates += [p / 'vis_data' / 'scalars.json' for p in stamps]
    looked = False
    for candidate in candidates:
        if candidate.is_file():
            looked = True
            log = read_log(candidate)
            if log.train:
                return log
    if looked:
        fail(f'{run}: no scalars.json under it holds training records')
    fail(f'{run}: no <timestamp>/vis_data/scalars.json under it (not an mmengine work dir?)')


def default_label(log_path: Path) -> str:
    """The name of the run's work dir, or its parent's where that is ``seed<N>``."""
    folder = Path(os.path.abspath(log_path)).parent
    if folder.name == 'vis_data' and TIMESTAMP.fullmatch(folder.parent.name):
        folder = folder.parent.parent
    elif TIMESTAMP.fullmatch(folder.name):
        folder = folder.parent
    if SEED.fullmatch(folder.name) and folder.parent.name:
        folder = folder.parent
    return folder.name or str(folder)


def series(records: List[dict], key: str) -> Series:
    """``key``'s values by x: ``gc/iter`` for ``gc/*`` keys where logged, else ``step`` (else
    ``iter``). The logger repeats a ``gc/*`` value until it is updated: one point per x stays."""
    out: Series = {}
    for record in records:
        if key not in record:
            continue
        x = record.get('gc/iter') if key.startswith('gc/') else None
        x = record.get('step', record.get('iter')) if x is None else x
        if x is not None:
            out[x] = record[key]
    return dict(sorted(out.items()))


def val_metrics(logs: List[Log]) -> List[str]:
    """Validation metric keys in order of appearance, less those that are -1 everywhere."""
    keys: Dict[str, bool] = {}
    for log in logs:
        for record in log.val:
            for key, value in record.items():
                if key not in NOT_METRICS:
                    keys[key] = keys.get(key, False) or value != -1
    return [key for key, used in keys.items() if used]


def val_unit(logs: List[Log]) -> str:
    """'epoch' where every run trained by epoch and validated at most at its last epoch."""
    for log in logs:
        epochs = [r['epoch'] for r in log.train if 'epoch' in r]
        if log.val and (len(epochs) < len(log.train)
                        or max(r['step'] for r in log.val) > max(epochs)):
            return 'iteration'
    return 'epoch'


# ---------------------------------------------------------------------------------------------
# variants


class Curve:
    """A variant's curve: mean over its runs on their shared x, and the band drawn around it."""

    def __init__(self, runs: List[Series]) -> None:
        import numpy as np
        shared = set(runs[0])
        for run in runs[1:]:
            shared &= set(run)
        self.n = len(runs)
        self.x = np.array(sorted(shared), dtype=float)
        ys = np.array([[run[x] for x in self.x] for run in runs], dtype=float).reshape(
            self.n, len(self.x))
        self.mean = ys.mean(axis=0)
        self.std = ys.std(axis=0, ddof=1) if self.n > 1 else None
        self.band = None if self.n == 1 else 'min-max' if self.n == 2 else 'std'
        if self.n == 2:
            self.lower, self.upper = ys.min(axis=0), ys.max(axis=0)
        elif self.n > 2:
            self.lower, self.upper = self.mean - self.std, self.mean + self.std
        else:
            self.lower = self.upper = None

    def legend(self, label: str) -> str:
        if self.n == 1:
            return f'{label} (1 run)'
        band = 'min-max band' if self.n == 2 else 'band +- std'
        return f'{label} ({self.n} runs, mean, {band})'

    def values(self) -> List:
        """Every value drawn (mean and band)."""
        out = list(self.mean)
        if self.lower is not None:
            out += list(self.lower) + list(self.upper)
        return out

    def to_json(self, logs: List[str]) -> dict:
        def floats(a) -> Optional[List[Optional[float]]]:
            return None if a is None else [float(v) if math.isfinite(v) else None for v in a]

        return dict(n_runs=self.n, runs=logs,
                    x=[int(v) if float(v).is_integer() else float(v) for v in self.x],
                    mean=floats(self.mean), std=floats(self.std), band=self.band,
                    lower=floats(self.lower), upper=floats(self.upper))


def curves_of(key: str, variants: Dict[str, List[Log]], part: str = 'train') \
        -> Dict[str, Tuple[Curve, List[str]]]:
    """label -> (curve of ``key`` over the variant's runs that log it, those runs' files)."""
    out = {}
    for label, logs in variants.items():
        runs = [(series(getattr(log, part), key), str(log.path)) for log in logs]
        runs = [(s, path) for s, path in runs if s]
        if not runs:
            continue
        curve = Curve([s for s, _ in runs])
        if not len(curve.x):
            print(f'warning: {key}: the {len(runs)} runs of {label!r} share no x value; left out',
                  file=sys.stderr)
            continue
        out[label] = (curve, [path for _, path in runs])
    return out


# ---------------------------------------------------------------------------------------------
# figures


class Figures:
    """Draws the figures into ``out`` and records their curves for curves.json."""

    def __init__(self, out: Path, variants: Dict[str, List[Log]], title: Optional[str]) -> None:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        self.plt = plt
        self.out, self.variants, self.title = out, variants, title
        palette = plt.get_cmap('tab10').colors
        self.colors = {label: palette[i % len(palette)] for i, label in enumerate(variants)}
        self.record: Dict[str, dict] = {}

    def grid(self, panels: int, width: float = 4.8, height: float = 3.3):
        columns = 1 if panels == 1 else 2 if panels in (2, 4) else 3
        rows = -(-panels // columns)
        if panels == 1:
            width, height = 7.0, 4.2
        fig, axes = self.plt.subplots(rows, columns, figsize=(width * columns, height * rows),
                                      squeeze=False)
        axes = list(axes.flat)
        for ax in axes[panels:]:
            ax.set_visible(False)
        return fig, axes[:panels]

    def save(self, fig, name: str, what: str, xlabel: str, panels: Dict[str, dict],
             legend: bool = True, styles: Sequence[Tuple[str, str]] = ()) -> None:
        """Writes ``name``.png. ``legend``: one legend of the variants for all panels (in the
        panel where there is one, else under them), with a black line for each of ``styles``
        ((line style, meaning), ...)."""
        fig.suptitle(f'{self.title}: {what}' if self.title else what)
        fig.tight_layout()
        axes = [ax for ax in fig.axes if ax.get_visible()]
        if legend:
            entries: Dict[str, object] = {}
            for ax in axes:
                handles, labels = ax.get_legend_handles_labels()
                entries.update((label, h) for h, label in zip(handles, labels)
                               if label not in entries)
            for style, meaning in styles:
                entries[meaning] = self.plt.Line2D([], [], color='black', linestyle=style)
            if len(axes) == 1:
                axes[0].legend(list(entries.values()), list(entries), fontsize='small')
            else:
                fig.legend(list(entries.values()), list(entries), loc='upper center',
                           bbox_to_anchor=(0.5, 0.0), ncol=min(len(entries), 2))
        path = self.out / f'{name}.png'
        fig.savefig(path, dpi=DPI, bbox_inches='tight')
        self.plt.close(fig)
        self.record[name] = dict(file=path.name, xlabel=xlabel, series=panels)
        print(f'wrote {path}')

    def draw(self, ax, curve: Curve, color, legend: str, style: str = '-',
             band: bool = True) -> None:
        marker = 'o' if len(curve.x) <= 30 else None
        ax.plot(curve.x, curve.mean, color=color, linestyle=style, marker=marker, markersize=3,
                linewidth=1.4, label=legend)
        if band and curve.lower is not None:
            ax.fill_between(curve.x, curve.lower, curve.upper, color=color, alpha=0.2,
                            linewidth=0)

    @staticmethod
    def finish(ax, title: str, xlabel: str, ylabel: str, log_if_wide: bool = False,
               values: Sequence[float] = ()) -> None:
        ax.set_title(title, fontsize='medium')
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        finite = [v for v in values if math.isfinite(v)]
        if log_if_wide and finite and min(finite) > 0 and max(finite) / min(finite) >= 100:
            ax.set_yscale('log')

    def panels(self, name: str, what: str, keys: List[str], xlabel: str,
               part: str = 'train') -> None:
        """One panel per key, every variant in each; a figure only where some key has data."""
        found = {key: curves_of(key, self.variants, part) for key in keys}
        found = {key: curves for key, curves in found.items() if curves}
        if not found:
            return
        fig, axes = self.grid(len(found))
        record = {}
        for ax, (key, curves) in zip(axes, found.items()):
            for label, (curve, _) in curves.items():
                self.draw(ax, curve, self.colors[label], curve.legend(label))
            self.finish(ax, key, xlabel, key)
            xs = sorted({float(x) for curve, _ in curves.values() for x in curve.x})
            if part == 'val' and len(xs) <= 12:  # ticks at the validations (a few epochs)
                ax.set_xticks(xs)
                if len(xs) == 1:
                    ax.set_xlim(xs[0] - 1, xs[0] + 1)
            elif part == 'val':
                ax.xaxis.get_major_locator().set_params(integer=True)
            record[key] = {label: curve.to_json(logs) for label, (curve, logs) in curves.items()}
        self.save(fig, name, what, xlabel, record)

    def gc(self) -> None:
        """gc.png: the global gc/* scalars, before and after GC sharing a panel."""
        keys: Dict[str, None] = {}
        for logs in self.variants.values():
            for log in logs:
                for record in log.train:
                    keys.update((k, None) for k in record
                                if k.startswith('gc/') and k.count('/') == 1 and k != 'gc/iter')
        layout = [(title, [line for line in lines if line[0] in keys])
                  for title, lines in GC_PANELS]
        known = {line[0] for _, lines in GC_PANELS for line in lines}
        layout += [(key, [(key, None, '-')]) for key in keys if key not in known]
        drawn = []
        for title, lines in layout:
            found = [(key, what, style, curves_of(key, self.variants))
                     for key, what, style in lines]
            found = [line for line in found if line[3]]
            if found:
                drawn.append((title, found))
        if not drawn:
            return
        fig, axes = self.grid(len(drawn))
        record = {}
        styles = {(style, what) for _, lines in drawn for _, what, style, _ in lines if what}
        for ax, (title, lines) in zip(axes, drawn):
            values = []
            for key, what, style, curves in lines:
                for label, (curve, _) in curves.items():
                    self.draw(ax, curve, self.colors[label], curve.legend(label), style)
                    values += curve.values()
                record[key] = {label: curve.to_json(logs)
                               for label, (curve, logs) in curves.items()}
            ylabel = lines[0][0] if len(lines) == 1 else title.split(':')[0]
            self.finish(ax, title, 'iteration', ylabel, True, values)
        self.save(fig, 'gc', 'GC diagnostics (GCStatsHook)', 'iteration', record,
                  styles=sorted(styles, key=lambda s: s[0] == '--'))

    def gc_layers(self) -> None:
        """gc_layers.png: one per-layer quantity for up to MAX_LAYERS layers, a panel per
        variant."""
        layers: Dict[str, None] = {}
        quantities: Dict[str, int] = {}
        for logs in self.variants.values():
            for log in logs:
                for record in log.train:
                    for key in record:
                        parts = key.split('/')
                        if len(parts) == 3 and parts[0] == 'gc':
                            layers[parts[1]] = None
                            quantities[parts[2]] = quantities.get(parts[2], 0) + 1
        if not layers:
            return
        quantity = ('mean_energy' if 'mean_energy' in quantities
                    else max(quantities, key=quantities.get))
        names = list(layers)
        if len(names) > MAX_LAYERS:  # evenly spaced in logging order: first to last layer
            step = (len(names) - 1) / (MAX_LAYERS - 1)
            names = [names[round(i * step)] for i in range(MAX_LAYERS)]
        shades = self.plt.get_cmap('viridis')  # by depth: first layer dark, last light
        colors = [shades(0.9 * i / max(len(names) - 1, 1)) for i in range(len(names))]
        found = {label: {name: curves_of(f'gc/{name}/{quantity}', {label: logs}).get(label)
                         for name in names} for label, logs in self.variants.items()}
        found = {label: {name: c for name, c in by_layer.items() if c}
                 for label, by_layer in found.items()}
        found = {label: by_layer for label, by_layer in found.items() if by_layer}
        if not found:
            return
        fig, axes = self.grid(len(found))
        record: Dict[str, dict] = {}
        for ax, (label, by_layer) in zip(axes, found.items()):
            values = []
            for color, name in zip(colors, names):
                if name in by_layer:
                    curve, logs = by_layer[name]
                    self.draw(ax, curve, color, name, band=False)  # 12 bands: unreadable
                    values += list(curve.mean)
                    record.setdefault(f'gc/{name}/{quantity}', {})[label] = curve.to_json(logs)
            n = max(curve.n for curve, _ in by_layer.values())
            self.finish(ax, f'{label} ({f"mean of {n} runs" if n > 1 else "1 run"})',
                        'iteration', quantity, True, values)
            ax.legend(fontsize='x-small', loc='upper left', bbox_to_anchor=(1.01, 1.0))
        what = f'per-layer {quantity}' + (f' ({len(names)} of {len(layers)} layers)'
                                           if len(names) < len(layers) else '')
        self.save(fig, 'gc_layers', what, 'iteration', record, legend=False)


# ---------------------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Writes the figures and curves.json; returns what curves.json holds."""
    args = parse_args(argv)
    logs = [find_log(run) for run in args.runs]
    for log in logs:
        for number in log.bad:
            print(f'warning: {log.path}:{number}: not a JSON object, skipped', file=sys.stderr)
    labels = args.labels or [default_label(log.path) for log in logs]
    variants: Dict[str, List[Log]] = {}
    for label, log in zip(labels, logs):
        variants.setdefault(label, []).append(log)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        fail(f'--out {out}: cannot create it ({error.strerror or error})')

    figures = Figures(out, variants, args.title)
    parts: Dict[str, None] = {}
    for log in logs:
        for record in log.train:
            parts.update((k, None) for k in record if k.startswith('loss_'))
    figures.panels('loss', 'training loss', ['loss'] + list(parts), 'iteration')
    figures.panels('lr', 'learning rate', ['lr'], 'iteration')
    unit = val_unit(logs)
    figures.panels('val', f'validation metrics by {unit}', val_metrics(logs), unit, part='val')
    figures.gc()
    figures.gc_layers()

    summary = dict(
        runs=[dict(run=run, log=str(log.path), label=label)
              for run, log, label in zip(args.runs, logs, labels)],
        variants={label: dict(runs=[str(log.path) for log in group])
                  for label, group in variants.items()},
        figures=figures.record)
    path = out / 'curves.json'
    path.write_text(json.dumps(summary, indent=1) + '\n')
    print(f'wrote {path}')
    return summary


if __name__ == '__main__':
    main()
