"""The embedded demo (``make demo``): Mask R-CNN (or Faster R-CNN) without and with GC on a
synthetic COCO dataset, on a CPU, in minutes, compared in the paper's format.

    python tools/misc/gc_demo.py                 # Mask R-CNN: box and mask AP
    python tools/misc/gc_demo.py --model faster  # Faster R-CNN: box AP

It writes the dataset (``data/synthetic_coco``, unless there), trains the baseline (SGD) and the
GC twin (SGDGC) with ``tools/train.py``, evaluates each final checkpoint with ``tools/test.py``
(COCO metrics) and prints AP, AP50 and AP75 side by side with the GC minus baseline delta.
"""
import argparse
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {
    'mask': ('Mask R-CNN', 'configs/demo/mask-rcnn_r18_fpn_synthetic.py',
             'configs/demo/mask-rcnn_r18_fpn_gc_synthetic.py', ('bbox', 'segm')),
    'faster': ('Faster R-CNN', 'configs/demo/faster-rcnn_r18_fpn_synthetic.py',
               'configs/demo/faster-rcnn_r18_fpn_gc_synthetic.py', ('bbox', )),
}
METRIC = re.compile(r'coco/(bbox|segm)_mAP(_50|_75)?: (-?[0-9.]+)')
MIN_AP50 = 0.5


def run(command: List[str]) -> str:
    """Runs a tool, showing its output as it comes, and returns that output."""
    print('+ ' + ' '.join(command), flush=True)
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines = []
    for line in process.stdout:
        sys.stdout.write(line)
        lines.append(line)
    if process.wait() != 0:
        raise SystemExit(f'error: {" ".join(command)} failed with exit code {process.returncode}')
    return ''.join(lines)


def metrics_of(output: str) -> Dict[str, float]:
    found = {f'{kind}{suffix or ""}': float(value) for kind, suffix, value in METRIC.findall(output)}
    if not found:
        raise SystemExit('error: tools/test.py printed no COCO metrics')
    return found


def table(title: str, kinds: tuple, results: Dict[str, Dict[str, float]]) -> str:
    names = {'bbox': 'box', 'segm': 'mask'}
    cols = [(kind, suffix) for kind in kinds for suffix in ('', '_50', '_75')]
    header = f'{"":16s}' + ' | '.join(
        f'{names[k] + " AP":>8s} {"AP50":>6s} {"AP75":>6s}' for k in kinds)
    rows = [title, header, '-' * len(header)]

    def row(label: str, values: Dict[str, float], sign: bool = False) -> str:
        cells = []
        for kind in kinds:
            fmt = '{:+.1f}' if sign else '{:.1f}'
            parts = [fmt.format(100 * values[f'{kind}{s}']) for s in ('', '_50', '_75')]
            cells.append(f'{parts[0]:>8s} {parts[1]:>6s} {parts[2]:>6s}')
        return f'{label:16s}' + ' | '.join(cells)

    rows.append(row('SGD (baseline)', results['baseline']))
    rows.append(row('SGDGC', results['gc']))
    delta = {f'{k}{s}': results['gc'][f'{k}{s}'] - results['baseline'][f'{k}{s}']
             for k, s in cols}
    rows.append(row('GC - baseline', delta, sign=True))
    return '\n'.join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description='Train and compare a detector without and '
                                     'with Gradient Centralization on synthetic data')
    parser.add_argument('--model', choices=sorted(CONFIGS), default='mask')
    parser.add_argument('--work-dir', default='work_dirs/demo', help='logs and checkpoints')
    parser.add_argument('--data', default='data/synthetic_coco', help='dataset folder')
    args = parser.parse_args()
    name, baseline, gc, kinds = CONFIGS[args.model]
    start = time.time()
    python = sys.executable
    if not (ROOT / args.data / 'annotations' / 'instances_val.json').exists():
        run([python, 'tools/dataset_converters/synthetic_coco.py', args.data])
    results, work_dirs = {}, {}
    for tag, config in (('baseline', baseline), ('gc', gc)):
        work_dir = Path(args.work_dir) / Path(config).stem
        work_dirs[tag] = work_dir
        run([python, 'tools/train.py', config, '--work-dir', str(work_dir)])
        checkpoint = (ROOT / work_dir / 'last_checkpoint').read_text().strip()
        output = run([python, 'tools/test.py', config, checkpoint, '--work-dir',
                      str(work_dir / 'test')])
        results[tag] = metrics_of(output)
    minutes = (time.time() - start) / 60
    title = (f'{name}, ResNet-18 FPN from scratch, synthetic COCO val '
             f'({args.model} demo, {minutes:.1f} min)')
    print('\n' + table(title, kinds, results))
    print(f'\nlogs and checkpoints: {work_dirs["baseline"]}/ and {work_dirs["gc"]}/')
    weak = [f'{tag} {kind} AP50 = {results[tag][kind + "_50"]:.3f}' for tag in results
            for kind in kinds if results[tag][kind + '_50'] < MIN_AP50]
    if weak:
        raise SystemExit(f'error: a model did not learn (AP50 below {MIN_AP50}): '
                         + ', '.join(weak))


if __name__ == '__main__':
    main()
