"""Collects the results of finished runs and prints them beside the GC paper's published numbers.

    python tools/analysis_tools/gc_results.py WORK_DIR [WORK_DIR ...]
    python tools/analysis_tools/gc_results.py work_dirs/*coco* --table 8 9 --json results.json
    python tools/analysis_tools/gc_results.py work_dirs/* --all-metrics --paper my_tables.json

The paper's tables, their metrics and the configs of each row are data:
``tools/analysis_tools/paper_results.json`` (``--paper`` reads another file of that schema).

A WORK_DIR is one run (one seed) of mmengine's Runner. Its config is the ``<config stem>.py`` the
Runner copies into the work dir; the stem names the table rows (baseline or GC side) that the run
belongs to, and rows with ``settings`` (Tables 3 and 4: one config, several learning rates or
weight decays) also need the copied config's values to match. The run's result is read from
the newest log folder ``<timestamp>/`` that has one:

- a test run (``tools/test.py ... --work-dir WORK_DIR``): ``<timestamp>/<timestamp>.json``, the
  metrics dict that the test wrote;
- failing that, a training: the last validation line of ``<timestamp>/vis_data/scalars.json``,
  if that validation came at the end of the training (``train_cfg``'s ``max_epochs`` or
  ``max_iters``).

Logged metrics become the paper's units as the data file says (COCO AP x 100, top-1 error =
100 - ``accuracy/top1``). Several work dirs of one row and side (seeds) give mean +- sample std
and their count. Per table and metric the rows come in the paper's order: the paper's numbers
without / with GC and their difference, yours, your difference, and yours minus the paper's.
Work dirs that cannot be read, or belong to no row, are named in a one-line warning each and
skipped; the exit status is 2 only when no run at all could be collected.
"""
import argparse
import ast
import importlib.util
import json
import math
import re
import statistics
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

DEFAULT_PAPER = Path(__file__).resolve().parent / 'paper_results.json'


def _load_plot_gc():
    """plot_gc.py of this folder (the tools folders are no packages): its log line reader."""
    spec = importlib.util.spec_from_file_location(
        'plot_gc', Path(__file__).resolve().parent / 'plot_gc.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


plot_gc = _load_plot_gc()
PROG = 'gc_results.py'
VARIANTS = ('baseline', 'gc')
VARIANT_NAMES = {'baseline': 'w/o GC', 'gc': 'w/ GC'}
TIMESTAMP = re.compile(r'^\d{8}_\d{6}$')


class PaperFileError(Exception):
    """The data file cannot be used."""


class Warnings(list):
    """Warnings printed at once (one line each, on stderr) and kept for the JSON output."""

    def add(self, message: str) -> None:
        self.append(message)
        print(f'{PROG}: warning: {message}', file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# the data file


def load_paper(path: Path) -> Dict[str, Any]:
    """Reads the data file and checks what this tool relies on."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as error:
        raise PaperFileError(f'cannot read {path}: {error.strerror or error}')
    except ValueError as error:
        raise PaperFileError(f'{path} is not valid JSON: {error}')
    tables = data.get('tables') if isinstance(data, dict) else None
    if not isinstance(tables, list) or not tables:
        raise PaperFileError(f'{path}: no "tables" list')
    seen = set()
    for table in tables:
        tid = table.get('id') if isinstance(table, dict) else None
        if not isinstance(tid, str) or tid in seen:
            raise PaperFileError(f'{path}: every table needs a unique string "id"')
        seen.add(tid)
        metrics = table.get('metrics')
        if not isinstance(metrics, list) or not metrics or not all(
                isinstance(m, dict) and isinstance(m.get('key'), str)
                and isinstance(m.get('log'), dict) and isinstance(m['log'].get('key'), str)
                for m in metrics):
            raise PaperFileError(f'{path}: table {tid}: "metrics" must list dicts with "key" '
                                 'and "log": {"key": ...}')
        if not all(isinstance(m['log'].get(k, 0.0), (int, float))
                   for m in metrics for k in ('scale', 'offset')):
            raise PaperFileError(f'{path}: table {tid}: a metric\'s log scale / offset is not '
                                 'a number')
        rows = table.get('rows')
        if not isinstance(rows, list) or not all(
                isinstance(r, dict) and isinstance(r.get('label'), str)
                and isinstance(r.get('configs'), dict)
                and isinstance(r.get('settings') or {}, dict)
                and isinstance(r.get('paper') or {}, dict) for r in rows):
            raise PaperFileError(f'{path}: table {tid}: every row needs "label" and "configs" '
                                 '(and dicts as "paper" and "settings", where given)')
    return data


def to_paper_unit(metric: Dict[str, Any], value: float) -> float:
    """A logged metric in the paper's unit: ``offset + scale * value``."""
    log = metric['log']
    return float(log.get('offset', 0.0)) + float(log.get('scale', 1.0)) * value


def config_stem(path: Optional[str]) -> Optional[str]:
    return Path(path).stem if path else None


# ---------------------------------------------------------------------------------------------
# reading a work dir


class _Unreadable:
    """Stands for a value of a copied config that is not a plain literal."""

    def __repr__(self) -> str:
        return '<unreadable>'


UNREADABLE = _Unreadable()


def _literal(node: ast.AST) -> Any:
    """The value of a literal expression of a config that mmengine wrote (dicts as ``dict(...)``
    calls); anything else raises ValueError. Nothing is executed."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [_literal(item) for item in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    if isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):
            raise ValueError('dict unpacking')
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)}
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == 'dict' and not node.args
            and all(kw.arg is not None for kw in node.keywords)):
        return {kw.arg: _literal(kw.value) for kw in node.keywords}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    raise ValueError(f'not a literal: {type(node).__name__}')


def read_config_dump(path: Path) -> Optional[Dict[str, Any]]:
    """The top-level variables of a config file that mmengine copied into a work dir, read
    without running it (values that are not literals become ``UNREADABLE``); None if the file
    cannot be parsed."""
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return None
    variables: Dict[str, Any] = {}
    for statement in tree.body:
        if (isinstance(statement, ast.Assign) and len(statement.targets) == 1
                and isinstance(statement.targets[0], ast.Name)):
            try:
                variables[statement.targets[0].id] = _literal(statement.value)
            except (ValueError, TypeError, RecursionError):
                variables[statement.targets[0].id] = UNREADABLE
    return variables


def lookup(config: Optional[Dict[str, Any]], dotted: str) -> Any:
    """``config['a']['b']['c']`` for ``'a.b.c'``; ``UNREADABLE`` where it is missing."""
    value: Any = config
    for part in dotted.split('.'):
        if not isinstance(value, dict) or part not in value:
            return UNREADABLE
        value = value[part]
    return value


def same_value(actual: Any, expected: Any) -> bool:
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        return (isinstance(actual, (int, float)) and not isinstance(actual, bool)
                and math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-12))
    return actual == expected


def numeric_items(record: Dict[str, Any]) -> Dict[str, float]:
    return {key: float(value) for key, value in record.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value)}


def read_json_lines(path: Path, warnings: Warnings) -> List[Dict[str, Any]]:
    """The dict lines of a json-lines log; malformed lines are skipped with one warning."""
    try:
        text = path.read_text(errors='replace')
    except OSError as error:
        warnings.add(f'{path}: cannot read it ({error.strerror or error})')
        return []
    records, bad = plot_gc.json_records(text)
    if bad:
        warnings.add(f'{path}: skipped {len(bad)} malformed line(s) (line {bad[0]}'
                     f'{", ..." if len(bad) > 1 else ""})')
    return records


def read_test_json(path: Path, warnings: Warnings) -> Optional[Dict[str, Any]]:
    """The metrics dict of a test run; mmengine writes one JSON object (read as json lines too,
    taking the last good one, should a file hold several)."""
    try:
        record = json.loads(path.read_text(errors='replace'))
        if isinstance(record, dict):
            return record
    except OSError as error:
        warnings.add(f'{path}: cannot read it ({error.strerror or error})')
        return None
    except ValueError:
        pass
    records = read_json_lines(path, warnings)
    return records[-1] if records else None


@dataclass
class Run:
    """One work dir's result, matched to table rows."""
    work_dir: str
    config: str
    source: str                     # 'test' or 'val'
    file: str                       # the file the metrics come from
    step: Optional[int]             # the validation's epoch or iteration ('val' only)
    metrics: Dict[str, float]       # logged key -> logged value
    matches: List[Tuple[str, int, str]] = field(default_factory=list)  # (table, row, variant)


def max_step(config: Optional[Dict[str, Any]]) -> Optional[int]:
    """The last epoch (epoch-based loop) or iteration of the training a config describes."""
    train_cfg = lookup(config, 'train_cfg')
    if not isinstance(train_cfg, dict):
        return None
    by_iter = train_cfg.get('type') == 'IterBasedTrainLoop' or train_cfg.get('by_epoch') is False
    value = train_cfg.get('max_iters' if by_iter else 'max_epochs')
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Index:
    """Which (table, row, variant) each config stem stands for."""

    def __init__(self, paper: Dict[str, Any]) -> None:
        self.paper = paper
        self.by_stem: Dict[str, List[Tuple[str, int, str]]] = {}
        for table in paper['tables']:
            for index, row in enumerate(table['rows']):
                for variant in VARIANTS:
                    stem = config_stem(row['configs'].get(variant))
                    if stem:
                        self.by_stem.setdefault(stem, []).append((table['id'], index, variant))
        self.tables = {table['id']: table for table in paper['tables']}

    def row(self, table: str, index: int) -> Dict[str, Any]:
        return self.tables[table]['rows'][index]


def collect(work_dir: str, index: Index, warnings: Warnings) -> Optional[Run]:
    """Reads one work dir; None (with a warning) when it gives no usable result."""
    root = Path(work_dir)
    if not root.is_dir():
        warnings.add(f'{work_dir}: not a directory')
        return None
    try:
        dumps = sorted(p for p in root.glob('*.py') if p.is_file())
        logs = sorted((p for p in root.iterdir() if p.is_dir() and TIMESTAMP.match(p.name)),
                      key=lambda p: p.name)
    except OSError as error:
        warnings.add(f'{work_dir}: cannot list it ({error.strerror or error})')
        return None
    if not dumps or not logs:
        missing = 'config copy (<config>.py)' if not dumps else 'log folder (<timestamp>/)'
        warnings.add(f'{work_dir}: not an mmengine work dir (no {missing})')
        return None
    known = sorted({p.stem for p in dumps if p.stem in index.by_stem})
    if not known:
        names = ', '.join(p.name for p in dumps)
        warnings.add(f'{work_dir}: its config ({names}) is in no table of the paper file')
        return None
    if len(known) > 1:
        warnings.add(f'{work_dir}: holds the configs of several rows ({", ".join(known)}); '
                     'use one work dir per run')
        return None
    stem = known[0]
    config = read_config_dump(root / f'{stem}.py')

    matches = []
    rejected: Dict[str, Dict[str, Any]] = {}
    for table, row_index, variant in index.by_stem[stem]:
        settings = index.row(table, row_index).get('settings') or {}
        if all(same_value(lookup(config, key), value) for key, value in settings.items()):
            matches.append((table, row_index, variant))
        else:
            rejected[table] = settings
    if not matches:
        keys = sorted({key for settings in rejected.values() for key in settings})
        found = ', '.join(f'{key}={lookup(config, key)!r}' for key in keys)
        warnings.add(f'{work_dir}: {stem} with {found} matches no row of table(s) '
                     f'{", ".join(sorted(rejected))}')
        return None

    wanted = {metric['log']['key'] for table, _, _ in matches
              for metric in index.tables[table]['metrics']}
    for log in reversed(logs):          # the newest test run first
        path = log / f'{log.name}.json'
        if path.is_file():
            record = read_test_json(path, warnings)
            values = numeric_items(record or {})
            if wanted & values.keys():
                return Run(work_dir, stem, 'test', str(path), None, values, matches)
    for log in reversed(logs):          # else the newest training's last validation
        path = log / 'vis_data' / 'scalars.json'
        if not path.is_file():
            continue
        lines = [numeric_items(r) for r in read_json_lines(path, warnings)]
        lines = [line for line in lines if wanted & line.keys()]
        if not lines:
            continue
        last = lines[-1]
        step = int(last['step']) if 'step' in last else None
        end = max_step(config)
        if end is not None and step is not None and step < end:
            warnings.add(f'{work_dir}: training not finished (last validation at step {step} '
                         f'of {end}) and no test results')
            return None
        return Run(work_dir, stem, 'val', str(path), step, last, matches)
    warnings.add(f'{work_dir}: no evaluation results ({", ".join(sorted(wanted))}) in a test '
                 'json or a training\'s vis_data/scalars.json')
    return None


# ---------------------------------------------------------------------------------------------
# the tables


def summary(values: Sequence[float]) -> Optional[Dict[str, Any]]:
    if not values:
        return None
    return dict(mean=statistics.mean(values),
                std=statistics.stdev(values) if len(values) > 1 else None,
                n=len(values), values=list(values))


def difference(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or b is None else a - b


def paper_value(row: Dict[str, Any], variant: str, key: str) -> Optional[float]:
    value = ((row.get('paper') or {}).get(variant) or {}).get(key)
    return float(value) if isinstance(value, (int, float)) else None


def paper_std(row: Dict[str, Any], variant: str, key: str) -> Optional[float]:
    value = ((row.get('paper_std') or {}).get(variant) or {}).get(key)
    return float(value) if isinstance(value, (int, float)) else None


def build_tables(index: Index, runs: List[Run], selected: Sequence[str]) -> List[Dict[str, Any]]:
    """The tables' content (paper, yours, differences) as plain data, for printing and JSON."""
    result = []
    for tid in selected:
        table = index.tables[tid]
        rows = []
        for row_index, row in enumerate(table['rows']):
            mine = {variant: [run for run in runs if (tid, row_index, variant) in run.matches]
                    for variant in VARIANTS}
            metrics = {}
            for metric in table['metrics']:
                key = metric['key']
                yours = {variant: summary([to_paper_unit(metric, run.metrics[metric['log']['key']])
                                           for run in mine[variant]
                                           if metric['log']['key'] in run.metrics])
                         for variant in VARIANTS}
                mean = {v: yours[v]['mean'] if yours[v] else None for v in VARIANTS}
                paper = {v: paper_value(row, v, key) for v in VARIANTS}
                metrics[key] = dict(
                    paper=dict(baseline=paper['baseline'], gc=paper['gc'],
                               baseline_std=paper_std(row, 'baseline', key),
                               gc_std=paper_std(row, 'gc', key),
                               delta=difference(paper['gc'], paper['baseline'])),
                    yours=dict(baseline=yours['baseline'], gc=yours['gc'],
                               delta=difference(mean['gc'], mean['baseline'])),
                    baseline_minus_paper=difference(mean['baseline'], paper['baseline']),
                    gc_minus_paper=difference(mean['gc'], paper['gc']))
            rows.append(dict(label=row['label'], in_paper=row.get('in_paper', True),
                             configs=row['configs'], note=row.get('note'),
                             work_dirs={v: [run.work_dir for run in mine[v]] for v in VARIANTS},
                             metrics=metrics))
        result.append(dict(id=tid, title=table.get('title', ''), source=table.get('source'),
                           setting=table.get('setting'), note=table.get('note'),
                           paper_runs=table.get('runs'), metrics=table['metrics'],
                           decimals=table.get('decimals', 2), rows=rows))
    return result


def render(header: Sequence[str], body: Sequence[Sequence[str]], left: int = 1) -> str:
    """An ASCII grid; the first ``left`` columns are left-aligned, the others right-aligned."""
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]
    rule = '+' + '+'.join('-' * (w + 2) for w in widths) + '+'

    def line(cells: Sequence[str]) -> str:
        return '| ' + ' | '.join(cell.ljust(w) if i < left else cell.rjust(w)
                                 for i, (cell, w) in enumerate(zip(cells, widths))) + ' |'

    return '\n'.join([rule, line(header), rule, *(line(cells) for cells in body), rule])


def number(value: Optional[float], decimals: int, std: Optional[float] = None,
           sign: bool = False) -> str:
    if value is None:
        return '-'
    text = f'{value:+.{decimals}f}' if sign else f'{value:.{decimals}f}'
    return text if std is None else f'{text} +- {std:.{decimals}f}'


def yours_cell(stats: Optional[Dict[str, Any]]) -> str:
    if not stats:
        return '-'
    return f'{number(stats["mean"], 2, stats["std"])} (n={stats["n"]})'


def format_table(table: Dict[str, Any], all_metrics: bool) -> str:
    """One table of the paper, one grid per metric."""
    source = table.get('source') or {}
    where = f' (arXiv {source["arxiv"]}, Table {source.get("table", table["id"])})' \
        if source.get('arxiv') else ''
    blocks = [f'Table {table["id"]}: {table["title"]}{where}']
    header = ['row', 'paper w/o GC', 'paper w/ GC', 'paper delta', 'yours w/o GC', 'yours w/ GC',
              'your delta', 'w/o GC - paper', 'w/ GC - paper']
    decimals = int(table.get('decimals', 2))
    for metric in table['metrics']:
        if not (all_metrics or metric.get('primary', True)):
            continue
        key = metric['key']
        body = []
        for row in table['rows']:
            cell = row['metrics'][key]
            paper, yours = cell['paper'], cell['yours']
            body.append([
                row['label'],
                number(paper['baseline'], decimals, paper['baseline_std']),
                number(paper['gc'], decimals, paper['gc_std']),
                number(paper['delta'], decimals, sign=True),
                yours_cell(yours['baseline']), yours_cell(yours['gc']),
                number(yours['delta'], 2, sign=True),
                number(cell['baseline_minus_paper'], 2, sign=True),
                number(cell['gc_minus_paper'], 2, sign=True)])
        details = [metric['unit']] if metric.get('unit') else []
        if not metric.get('higher_is_better', True):
            details.append('lower is better')
        title = f'{metric.get("name", key)}: {metric.get("description", key)}'
        if details:
            title += f' ({", ".join(details)})'
        blocks.append(f'{title}\n{render(header, body)}')
    notes = [table['note']] if table.get('note') else []
    notes += [f'{row["label"]}: {row["note"]}' for row in table['rows']
              if row['note'] and (row['work_dirs']['baseline'] or row['work_dirs']['gc'])]
    blocks += [textwrap.fill(note, 100, initial_indent='note: ', subsequent_indent=' ' * 6)
               for note in notes]
    return '\n'.join(blocks)


def format_runs(runs: Sequence[Run], index: Index) -> str:
    body = []
    for run in runs:
        where = 'test' if run.source == 'test' else f'last val (step {run.step})'
        rows = '; '.join(f'Table {t} {index.row(t, i)["label"]} {VARIANT_NAMES[v]}'
                         for t, i, v in run.matches)
        body.append([run.work_dir, run.config, where, rows])
    return render(['work dir', 'config', 'result', 'table rows'], body, left=4)


# ---------------------------------------------------------------------------------------------
# command line


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Compare finished runs with the GC paper's tables")
    parser.add_argument('work_dirs', nargs='+', metavar='WORK_DIR',
                        help='work dirs of finished runs (one per run / seed)')
    parser.add_argument('--table', nargs='+', metavar='ID',
                        help='print these tables (default: every table that has a run), '
                        'also those without runs')
    parser.add_argument('--json', metavar='OUT.json', help='also write the tables as JSON')
    parser.add_argument('--paper', metavar='FILE', default=str(DEFAULT_PAPER),
                        help='the data file of the paper\'s tables (default: '
                        'paper_results.json beside this tool)')
    parser.add_argument('--all-metrics', action='store_true',
                        help='also print the metrics a --paper file marks "primary": false '
                        '(default: the primary ones only; the default data file has no '
                        'other); the JSON has all of them anyway')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        paper = load_paper(Path(args.paper))
    except PaperFileError as error:
        print(f'{PROG}: error: {error}', file=sys.stderr)
        return 2
    index = Index(paper)
    if args.table:
        unknown = [t for t in args.table if t not in index.tables]
        if unknown:
            print(f'{PROG}: error: no table {", ".join(unknown)} in {args.paper} (it has '
                  f'{", ".join(index.tables)})', file=sys.stderr)
            return 2

    warnings = Warnings()
    runs: List[Run] = []
    seen = set()
    for work_dir in args.work_dirs:
        resolved = Path(work_dir).resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        run = collect(work_dir, index, warnings)
        if run is not None:
            runs.append(run)

    order = list(index.tables)
    if args.table:
        selected = [t for t in order if t in args.table]
    else:
        selected = [t for t in order if any(m[0] == t for run in runs for m in run.matches)]
    used = [run for run in runs if any(m[0] in selected for m in run.matches)]
    if not used:
        what = f' for table(s) {", ".join(selected)}' if args.table else ''
        print(f'{PROG}: error: no results collected{what} from {len(seen)} work dir(s)',
              file=sys.stderr)
        return 2
    for run in used:
        run.matches = [m for m in run.matches if m[0] in selected]

    tables = build_tables(index, used, selected)
    print(f'{len(used)} run(s) collected:')
    print(format_runs(used, index))
    for table in tables:
        print()
        print(format_table(table, args.all_metrics))
    print("\nyours: mean +- sample std over n runs; delta: w/ GC - w/o GC; x - paper: your mean - "
          "the paper's")

    if args.json:
        content = dict(paper_file=str(args.paper), paper=paper.get('paper'),
                       runs=[dict(work_dir=r.work_dir, config=r.config, source=r.source,
                                  file=r.file, step=r.step, metrics=r.metrics,
                                  rows=[dict(table=t, row=index.row(t, i)['label'], variant=v)
                                        for t, i, v in r.matches]) for r in used],
                       warnings=list(warnings), tables=tables)
        try:
            Path(args.json).write_text(json.dumps(content, indent=2) + '\n')
        except OSError as error:
            print(f'{PROG}: error: cannot write {args.json}: {error.strerror or error}',
                  file=sys.stderr)
            return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
