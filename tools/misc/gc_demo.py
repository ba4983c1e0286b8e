"""The embedded demo (``make demo``): Mask R-CNN (or Faster R-CNN) fine-tuned without and with
GC on a synthetic COCO dataset from a pretrained backbone, as the paper's detectors are, on a
CPU, in minutes, compared in the paper's format.

    python tools/misc/gc_demo.py                     # Mask R-CNN: box and mask AP
    python tools/misc/gc_demo.py --model faster      # Faster R-CNN: box AP
    python tools/misc/gc_demo.py --rebuild-pretrain  # pretrain the backbone again first
    python tools/misc/gc_demo.py --from-scratch      # no pretraining (init_cfg=None)
    python tools/misc/gc_demo.py --seeds 5           # 5 seeds each: mean +- std, paired CI

1. Pretraining, once: the demo's ResNet-18 is trained as an mmpretrain classifier
   (``configs/demo/resnet18_1xb32_synthetic-shapes.py``, plain SGD) on the synthetic shape
   images (``data/synthetic_shapes_cls``, the ImageNet stand-in, written unless there). The
   final weights are kept as ``WORK_DIR/pretrain/pretrained.pth`` (the classifier's state_dict
   and a description of the run) and reused by later runs until ``--rebuild-pretrain``.
2. The detection dataset (``data/synthetic_coco``) is written unless there; the baseline (SGD)
   and the GC twin (SGDGC) are trained with ``tools/train.py``, both starting from that backbone
   through the configs' ``init_cfg=dict(type='Pretrained', prefix='backbone.')``, and each final
   checkpoint is evaluated with ``tools/test.py`` (COCO metrics).
3. AP, AP50 and AP75 are printed side by side with the GC minus baseline delta, and what the
   backbone was pretrained on, for how long, and its top-1. The training curves go to
   ``WORK_DIR/plots`` (by ``tools/analysis_tools/plot_gc.py``, where it exists).

With ``--seeds N`` (N > 1), step 2 is a seed sweep of ``tools/misc/gc_repeat.py`` instead: both
detectors trained and tested with seeds 0 .. N-1 into ``WORK_DIR/sweep/<config>/seed<S>``, each
seed's pair checked to start from the same weights and batches, and the table shows AP, AP50 and
AP75 as mean +- std, the paired GC minus baseline difference, its 95% confidence interval and the
seeds GC won; ``WORK_DIR/sweep/`` also holds ``summary.json`` and ``plots/``.
"""
import argparse
import importlib.util
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from mmgc.utils import allow_mmengine_checkpoints

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {
    'mask': ('Mask R-CNN', 'configs/demo/mask-rcnn_r18_fpn_synthetic.py',
             'configs/demo/mask-rcnn_r18_fpn_gc_synthetic.py', ('bbox', 'segm')),
    'faster': ('Faster R-CNN', 'configs/demo/faster-rcnn_r18_fpn_synthetic.py',
               'configs/demo/faster-rcnn_r18_fpn_gc_synthetic.py', ('bbox', )),
}
METRIC = re.compile(r'coco/(bbox|segm)_mAP(_50|_75)?: (-?[0-9.]+)')
MIN_AP50 = 0.5
PRETRAIN_CONFIG = 'configs/demo/resnet18_1xb32_synthetic-shapes.py'
PRETRAINED = 'pretrained.pth'  # in WORK_DIR/pretrain/, what the detection configs' init_cfg reads
TOP1 = re.compile(r'accuracy/top1: ([0-9.]+)')


def _load_tool(path: Path):
    """A tool as a module (the tools folders are no packages)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gc_repeat = _load_tool(Path(__file__).with_name('gc_repeat.py'))  # --seeds N: sweep, table
synthetic_coco = _load_tool(ROOT / 'tools' / 'dataset_converters' / 'synthetic_coco.py')


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


def dataset_outdated(root: Path) -> bool:
    """Whether the detection dataset must be written: missing, or written by an older
    generator or with other settings than the demo's (then it says so)."""
    if not (root / 'annotations' / 'instances_val.json').exists():
        return True
    settings_file = root / synthetic_coco.SETTINGS_FILE
    wanted = synthetic_coco.settings(300, 60, 0, 128, synthetic_coco.LEVELS['demo'])
    try:
        found = json.loads(settings_file.read_text())
    except (OSError, ValueError):
        found = None
    if found != wanted:
        print(f'{root} was not written with the demo\'s current settings '
              f'({synthetic_coco.SETTINGS_FILE} differs or is missing): writing it again')
        return True
    return False


def describe_pretraining(meta: Dict) -> str:
    """One line: what the backbone was pretrained on, for how long, and its top-1."""
    return (f'backbone: ResNet-18 pretrained with mmpretrain on {meta["dataset"]} '
            f'({len(meta["classes"])} classes, {meta["images"]} images), {meta["epochs"]} '
            f'epochs in {meta["minutes"]:.1f} min, val top-1 {meta["top1"]:.1f}%')


def pretrain(work_dir: Path, data: str, rebuild: bool = False) -> Dict:
    """The backbone's pretraining, run once and cached: returns the description that
    ``WORK_DIR/pretrain/pretrained.pth`` carries (``meta``), training first only where that
    file is missing or ``rebuild`` is set. The classification dataset is written if missing."""
    checkpoint = Path(work_dir) / PRETRAINED
    if checkpoint.is_file() and not rebuild:
        meta = torch.load(ROOT / checkpoint, map_location='cpu', weights_only=True)['meta']
        meta['checkpoint'] = str(checkpoint)  # where it is now
        print(f'reusing the pretrained backbone {checkpoint} (--rebuild-pretrain retrains it)')
        return meta
    python = sys.executable
    if not (ROOT / data / 'val').is_dir():
        run([python, 'tools/dataset_converters/synthetic_shapes_cls.py', data])
    start = time.time()
    output = run([python, 'tools/train.py', PRETRAIN_CONFIG, '--work-dir', str(work_dir),
                  '--cfg-options', f'train_dataloader.dataset.data_root={data}',
                  f'val_dataloader.dataset.data_root={data}'])
    minutes = (time.time() - start) / 60
    top1 = TOP1.findall(output)
    if not top1:
        raise SystemExit('error: the pretraining printed no accuracy/top1')
    last = (ROOT / work_dir / 'last_checkpoint').read_text().strip()
    allow_mmengine_checkpoints()  # torch's safe loading of what mmengine saved
    trained = torch.load(ROOT / last, map_location='cpu', weights_only=True)
    classes = sorted(p.name for p in (ROOT / data / 'train').iterdir() if p.is_dir())
    images = sum(1 for _ in (ROOT / data / 'train').glob('*/*.png'))
    meta = dict(config=PRETRAIN_CONFIG, checkpoint=str(checkpoint), dataset='synthetic shapes',
                classes=classes, images=images, epochs=int(trained['meta']['epoch']),
                minutes=round(minutes, 2), top1=float(top1[-1]))
    # The classifier's weights only (no optimizer state), as published ImageNet checkpoints.
    torch.save(dict(meta=meta, state_dict=trained['state_dict']), ROOT / checkpoint)
    print(describe_pretraining(meta))
    return meta


def metrics_of(output: str) -> Dict[str, float]:
    found = {f'{kind}{suffix or ""}': float(value)
             for kind, suffix, value in METRIC.findall(output)}
    if not found:
        raise SystemExit('error: tools/test.py printed no COCO metrics')
    return found


def table(title: str, kinds: tuple, results: Dict[str, Dict[str, float]],
          note: Optional[str] = None) -> str:
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
    if note:
        rows.append(note)
    return '\n'.join(rows)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Pretrain the demo backbone (once), then '
                                     'fine-tune a detector from it without and with Gradient '
                                     'Centralization on synthetic data and compare')
    parser.add_argument('--model', choices=sorted(CONFIGS), default='mask')
    parser.add_argument('--work-dir', default='work_dirs/demo',
                        help='logs and checkpoints; the pretrained backbone is cached in its '
                        'pretrain/ folder')
    parser.add_argument('--data', default='data/synthetic_coco', help='detection dataset folder')
    parser.add_argument('--pretrain-data', default='data/synthetic_shapes_cls',
                        help='classification dataset folder for the pretraining')
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--rebuild-pretrain', action='store_true',
                       help='pretrain the backbone again even if a cached one exists')
    group.add_argument('--from-scratch', action='store_true',
                       help='no pretraining: the detectors start from random weights')
    parser.add_argument('--seeds', type=int, default=1,
                        help='train each detector with seeds 0 .. N-1 and report mean +- std, '
                        'paired differences and a 95%% interval (runs in WORK_DIR/sweep/); '
                        'default 1: one run each')
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f'--seeds must be at least 1, got {args.seeds}')
    return args


def sweep(args: argparse.Namespace, init: List[str], note: Optional[str], origin: str,
          check: Callable[[str, str], None], start: float, new_backbone: bool) -> None:
    """--seeds N: both detectors over N seeds through gc_repeat.py; prints its table. Runs of an
    earlier sweep are kept, unless the backbone was pretrained in this call (``new_backbone``)."""
    name, baseline, gc, kinds = CONFIGS[args.model]
    work_dir = ROOT / args.work_dir / 'sweep'  # the tools' paths are from the root
    metrics = [f'coco/{kind}_mAP{suffix}' for kind in kinds for suffix in ('', '_50', '_75')]
    summary = gc_repeat.sweep(baseline, gc, list(range(args.seeds)), work_dir, init, metrics,
                              title=f'{name}, ResNet-18 FPN {origin}, synthetic COCO val',
                              force=new_backbone, check=check)
    print('\n' + gc_repeat.table(summary))
    if note:
        print(note)
    where = gc_repeat.display(work_dir)
    print(f'({args.model} demo, {(time.time() - start) / 60:.1f} min; runs: {where}/<config>/'
          f'seed<N>/, summary: {where}/summary.json)')
    gc_repeat.plot_runs(gc_repeat.training_dirs(summary), work_dir / 'plots')
    weak = [f'{tag} seed {seed} {kind} AP50 = {values[f"coco/{kind}_mAP_50"]:.1f}'
            for tag in gc_repeat.VARIANTS for kind in kinds
            for seed, values in zip(summary['seeds'], summary['per_seed'][tag])
            if values[f'coco/{kind}_mAP_50'] < 100 * MIN_AP50]
    if weak:
        raise SystemExit(f'error: a model did not learn (AP50 below {100 * MIN_AP50:.0f}): '
                         + ', '.join(weak))


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    name, baseline, gc, kinds = CONFIGS[args.model]
    start = time.time()
    python = sys.executable
    new_backbone = False
    if args.from_scratch:
        init, note = ['model.backbone.init_cfg=None'], None
        origin = 'from scratch'
    else:
        new_backbone = args.rebuild_pretrain or \
            not (Path(args.work_dir) / 'pretrain' / PRETRAINED).is_file()
        meta = pretrain(Path(args.work_dir) / 'pretrain', args.pretrain_data,
                        args.rebuild_pretrain)
        init = [f'model.backbone.init_cfg.checkpoint={meta["checkpoint"]}']
        note = describe_pretraining(meta)
        origin = 'fine-tuned from a pretrained backbone'
    new_data = dataset_outdated(ROOT / args.data)
    if new_data:
        run([python, 'tools/dataset_converters/synthetic_coco.py', args.data])

    def check(config: str, output: str) -> None:
        if not args.from_scratch and f'load backbone. in model from: {meta["checkpoint"]}' \
                not in output:
            raise SystemExit(f'error: {config} did not load the pretrained backbone')

    if args.seeds > 1:
        return sweep(args, init, note, origin, check, start, new_backbone or new_data)
    results, work_dirs = {}, {}
    for tag, config in (('baseline', baseline), ('gc', gc)):
        work_dir = Path(args.work_dir) / Path(config).stem
        work_dirs[tag] = work_dir
        output = run([python, 'tools/train.py', config, '--work-dir', str(work_dir),
                      '--cfg-options', *init])
        check(config, output)
        checkpoint = (ROOT / work_dir / 'last_checkpoint').read_text().strip()
        output = run([python, 'tools/test.py', config, checkpoint, '--work-dir',
                      str(work_dir / 'test')])
        results[tag] = metrics_of(output)
    minutes = (time.time() - start) / 60
    title = (f'{name}, ResNet-18 FPN {origin}, synthetic COCO val '
             f'({args.model} demo, {minutes:.1f} min)')
    print('\n' + table(title, kinds, results, note))
    print(f'\nlogs and checkpoints: {work_dirs["baseline"]}/ and {work_dirs["gc"]}/'
          + ('' if args.from_scratch else f', pretrained backbone: {meta["checkpoint"]}'))
    gc_repeat.plot_runs([str(work_dirs['baseline']), str(work_dirs['gc'])],
                        ROOT / args.work_dir / 'plots')
    weak = [f'{tag} {kind} AP50 = {results[tag][kind + "_50"]:.3f}' for tag in results
            for kind in kinds if results[tag][kind + '_50'] < MIN_AP50]
    if weak:
        raise SystemExit(f'error: a model did not learn (AP50 below {MIN_AP50}): '
                         + ', '.join(weak))


if __name__ == '__main__':
    main()
