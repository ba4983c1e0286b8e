"""tools/analysis_tools/plot_gc.py: figures and curves.json from mmengine logs.

Synthetic logs with known values (two variants x two seeds, GCStatsHook-style ``gc/*`` scalars
repeated until updated, validation lines, a truncated last line) check the numbers in curves.json;
one real tiny mmengine training checks that what mmengine writes is read; the error cases end
with one ``plot_gc.py: error:`` line and exit status 2.
"""
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from ..test_configs.test_demo_configs import load_tool

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / 'tools' / 'analysis_tools' / 'plot_gc.py'
plot_gc = load_tool('tools/analysis_tools/plot_gc.py')

ITERS = list(range(10, 101, 10))  # a training line every 10 iterations, 5 per epoch
GC_EVERY = 20                     # the GC statistics are computed every 20 iterations
LAYERS = [f'layer{i}.weight' for i in range(14)]


def loss(variant: str, seed: int, it: int) -> float:
    return (2.0 if variant == 'baseline' else 1.5) / (1 + it / 50) + 0.1 * seed


def energy(variant: str, seed: int, it: int) -> float:
    """A gc value, known at its computation iteration ``it``."""
    return (1.0 if variant == 'baseline' else 1e-4) * (seed + 1) / it


def write_log(path: Path, variant: str, seed: int, extra_iter: bool = False,
              truncated: bool = True) -> Path:
    """A scalars.json as mmengine writes it, with the gc/* values repeated on every line until
    the next computation, validation lines at the end of each epoch and a truncated last line."""
    lines = []
    for it in ITERS + ([110] if extra_iter else []):
        record = dict(lr=0.02 * (1 - it / 200), data_time=0.01, loss=loss(variant, seed, it),
                      loss_cls=loss(variant, seed, it) / 2, time=0.2)
        gc_it = it // GC_EVERY * GC_EVERY
        if gc_it:
            record.update({'gc/grad_norm': 3.0 + gc_it, 'gc/grad_norm_gc': 2.0 + gc_it,
                           'gc/mean_energy': energy(variant, seed, gc_it), 'gc/iter': gc_it})
            record.update({f'gc/{name}/mean_energy': energy(variant, seed, gc_it) * (i + 1)
                           for i, name in enumerate(LAYERS)})
        record.update(epoch=(it - 1) // 50 + 1, iter=it, step=it)
        lines.append(json.dumps(record))
        if it % 50 == 0:
            lines.append(json.dumps({'accuracy/top1': 50.0 + 10 * it / 50 + seed,
                                     'coco/bbox_mAP_l': -1.0, 'data_time': 0.01, 'time': 0.1,
                                     'step': it // 50}))
    if truncated:
        lines.append('{"lr": 0.01, "data_time": 0.01, "loss": 0.')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('\n'.join(lines) + '\n')
    return path


def work_dir(root: Path, variant: str, seed: int, **kw) -> Path:
    """``root/variant/seed<N>``: the newest timestamp folder with training records is the run
    (an older training and a newer test run lie beside it)."""
    folder = root / variant / f'seed{seed}'
    write_log(folder / '20260101_000000' / 'vis_data' / 'scalars.json', 'baseline', 9)
    write_log(folder / '20261129_120000' / 'vis_data' / 'scalars.json', variant, seed, **kw)
    test_run = folder / '20261130_080000' / 'vis_data' / 'scalars.json'
    test_run.parent.mkdir(parents=True)
    test_run.write_text('{"accuracy/top1": 12.0, "data_time": 0.1, "time": 0.2, "step": 0}\n')
    return folder


def check_pngs(out: Path, names) -> None:
    from matplotlib.image import imread
    assert sorted(p.name for p in out.glob('*.png')) == sorted(f'{n}.png' for n in names)
    for name in names:
        path = out / f'{name}.png'
        assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
        assert 8_000 < path.stat().st_size < 300_000, (name, path.stat().st_size)
        height, width = imread(path).shape[:2]
        assert height >= 300 and width >= 500, (name, height, width)


def test_two_variants_two_seeds(tmp_path, capsys):
    runs = [work_dir(tmp_path / 'work', 'baseline', 0),
            work_dir(tmp_path / 'work', 'baseline', 1, extra_iter=True),
            work_dir(tmp_path / 'work', 'gc', 0), work_dir(tmp_path / 'work', 'gc', 1)]
    out = tmp_path / 'plots'
    plot_gc.main([str(r) for r in runs] + ['--out', str(out), '--title', 'toy'])
    stdout, stderr = capsys.readouterr()
    figures = ['loss', 'lr', 'val', 'gc', 'gc_layers']
    assert stdout.splitlines() == [f'wrote {out / n}.png' for n in figures] + [
        f'wrote {out / "curves.json"}']
    # the truncated last line of each run: a warning naming it, nothing else
    warnings = stderr.splitlines()
    assert len(warnings) == 4 and all(w.startswith('warning: ') for w in warnings)
    assert f'20261129_120000/vis_data/scalars.json:{len(ITERS) + 3}:' in warnings[0]
    check_pngs(out, figures)

    curves = json.loads((out / 'curves.json').read_text())
    assert [r['label'] for r in curves['runs']] == ['baseline'] * 2 + ['gc'] * 2
    assert all('20261129_120000' in r['log'] for r in curves['runs'])
    assert list(curves['variants']) == ['baseline', 'gc']
    figs = curves['figures']
    assert list(figs) == figures

    # loss: mean of the two seeds at each shared iteration (110 only in one run: left out)
    assert figs['loss']['xlabel'] == 'iteration'
    assert list(figs['loss']['series']) == ['loss', 'loss_cls']
    for variant in ('baseline', 'gc'):
        curve = figs['loss']['series']['loss'][variant]
        assert curve['n_runs'] == 2 and curve['band'] == 'min-max'
        assert curve['x'] == ITERS
        pairs = [(loss(variant, 0, it), loss(variant, 1, it)) for it in ITERS]
        assert curve['mean'] == pytest.approx([(a + b) / 2 for a, b in pairs])
        assert curve['std'] == pytest.approx([statistics.stdev(p) for p in pairs])
        assert curve['lower'] == pytest.approx([min(p) for p in pairs])
        assert curve['upper'] == pytest.approx([max(p) for p in pairs])
    assert figs['lr']['series']['lr']['gc']['mean'] == pytest.approx(
        [0.02 * (1 - it / 200) for it in ITERS])

    # validation: by epoch; the metric that is -1 everywhere (COCO's "no such objects") left out
    assert figs['val']['xlabel'] == 'epoch'
    assert list(figs['val']['series']) == ['accuracy/top1']
    top1 = figs['val']['series']['accuracy/top1']['gc']
    assert top1['x'] == [1, 2] and top1['mean'] == pytest.approx([60.5, 70.5])

    # gc: one point per distinct gc/iter, at gc/iter, with the value computed there
    gc_iters = list(range(GC_EVERY, 101, GC_EVERY))
    assert list(figs['gc']['series']) == ['gc/grad_norm', 'gc/grad_norm_gc', 'gc/mean_energy']
    for variant in ('baseline', 'gc'):
        curve = figs['gc']['series']['gc/mean_energy'][variant]
        assert curve['x'] == gc_iters
        assert curve['mean'] == pytest.approx(
            [(energy(variant, 0, it) + energy(variant, 1, it)) / 2 for it in gc_iters])
    assert figs['gc']['series']['gc/grad_norm']['gc']['mean'] == pytest.approx(
        [3.0 + it for it in gc_iters])

    # per layer: 12 of the 14 layers, evenly spaced, the first and the last among them
    layers = [key.split('/')[1] for key in figs['gc_layers']['series']]
    assert len(layers) == 12 and layers[0] == LAYERS[0] and layers[-1] == LAYERS[-1]
    curve = figs['gc_layers']['series'][f'gc/{LAYERS[-1]}/mean_energy']['baseline']
    assert curve['x'] == gc_iters
    assert curve['mean'] == pytest.approx(
        [(energy('baseline', 0, it) + energy('baseline', 1, it)) * 14 / 2 for it in gc_iters])


def test_std_band_labels_and_files(tmp_path, capsys):
    """Three runs: mean +- sample std; one run: a plain line; --labels; log files as RUNs."""
    logs = [write_log(tmp_path / f'a{seed}.json', 'gc', seed, truncated=False)
            for seed in range(3)]
    single = write_log(tmp_path / 'b' / 'scalars.json', 'baseline', 0)
    out = tmp_path / 'plots'
    plot_gc.main([str(p) for p in logs + [single]] + ['--out', str(out), '--labels', 'GC', 'GC',
                                                        'GC', 'SGD'])
    curves = json.loads((out / 'curves.json').read_text())['figures']
    gc = curves['loss']['series']['loss']['GC']
    assert gc['n_runs'] == 3 and gc['band'] == 'std'
    values = [[loss('gc', seed, it) for seed in range(3)] for it in ITERS]
    assert gc['mean'] == pytest.approx([statistics.mean(v) for v in values])
    assert gc['std'] == pytest.approx([statistics.stdev(v) for v in values])
    assert gc['lower'] == pytest.approx([statistics.mean(v) - statistics.stdev(v)
                                         for v in values])
    sgd = curves['loss']['series']['loss']['SGD']
    assert sgd['n_runs'] == 1 and sgd['band'] is None and sgd['std'] is None
    assert sgd['mean'] == pytest.approx([loss('baseline', 0, it) for it in ITERS])
    assert 'warning: ' in capsys.readouterr().err  # single's truncated line


def test_default_labels():
    label = plot_gc.default_label
    assert label(Path('w/faster-rcnn_gc/seed3/20261129_221530/vis_data/scalars.json')) == \
        'faster-rcnn_gc'
    assert label(Path('w/faster-rcnn/20261129_221530/vis_data/20261129_221530.json')) == \
        'faster-rcnn'
    assert label(Path('w/run_a/scalars.json')) == 'run_a'


def test_series_drops_repeats_and_falls_back_to_step():
    records = [{'step': 1.0, 'gc/x': 5.0}, {'step': 2.0, 'gc/x': 5.0},
               {'step': 3.0, 'gc/x': 7.0, 'gc/iter': 3.0}, {'step': 4.0, 'gc/x': 7.0,
                                                              'gc/iter': 3.0}]
    assert plot_gc.series(records, 'gc/x') == {1.0: 5.0, 2.0: 5.0, 3.0: 7.0}


def test_a_real_mmengine_run(tmp_path, capsys):
    """A toy training by mmengine's Runner, with a hook logging gc/* scalars every 3 iterations:
    its work dir is read as mmengine wrote it."""
    import time

    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    from ..test_utils.toy import ToyDataset, ToyModel

    class FakeGCStats(Hook):
        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            if (runner.iter + 1) % 3 == 0:
                runner.message_hub.update_scalar('train/gc/mean_energy', 0.01 * runner.iter)
                runner.message_hub.update_scalar('train/gc/iter', runner.iter + 1)

    loader = dict(dataset=ToyDataset(16), batch_size=4, collate_fn=dict(type='default_collate'),
                  sampler=dict(type='DefaultSampler', shuffle=False))
    runner = Runner(
        model=ToyModel(), work_dir=str(tmp_path / 'toy'), train_dataloader=loader,
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=True, max_epochs=2),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1), checkpoint=None),
        custom_hooks=[FakeGCStats()],
        visualizer=dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend')]),
        experiment_name=f'plot_gc_{time.time_ns()}')
    runner.train()
    capsys.readouterr()

    out = tmp_path / 'plots'
    plot_gc.main([str(tmp_path / 'toy'), '--out', str(out)])
    assert capsys.readouterr().out.splitlines() == [
        f'wrote {out / n}.png' for n in ('loss', 'lr', 'gc')] + [f'wrote {out / "curves.json"}']
    check_pngs(out, ['loss', 'lr', 'gc'])
    curves = json.loads((out / 'curves.json').read_text())
    scalars = Path(curves['runs'][0]['log'])
    assert scalars.name == 'scalars.json' and scalars.parent.parent.parent == tmp_path / 'toy'
    records = [json.loads(line) for line in scalars.read_text().splitlines()]
    loss = curves['figures']['loss']['series']['loss']['toy']
    assert loss['x'] == list(range(1, 9)) == [r['step'] for r in records]
    assert loss['mean'] == pytest.approx([r['loss'] for r in records])
    energy = curves['figures']['gc']['series']['gc/mean_energy']['toy']
    assert energy['x'] == [3, 6] and energy['mean'] == pytest.approx([0.02, 0.05])


def one_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_:
        plot_gc.main(argv)
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('plot_gc.py: error: '), captured.err
    assert captured.out == ''
    return lines[0]


def test_errors(tmp_path, capsys):
    out = str(tmp_path / 'plots')
    missing = str(tmp_path / 'nowhere')
    assert 'no such file or directory' in one_error(capsys, [missing, '--out', out])
    val_only = tmp_path / 'val_only' / 'scalars.json'
    val_only.parent.mkdir()
    val_only.write_text('{"accuracy/top1": 10.0, "step": 1}\n')
    assert 'no training records' in one_error(capsys, [str(val_only), '--out', out])
    test_only = tmp_path / 'test_only' / '20261129_221530' / 'vis_data' / 'scalars.json'
    test_only.parent.mkdir(parents=True)
    test_only.write_text('{"accuracy/top1": 10.0, "data_time": 0.1, "time": 0.2}\n')
    message = one_error(capsys, [str(tmp_path / 'test_only'), '--out', out])
    assert 'no scalars.json under it holds training records' in message
    assert 'not an mmengine work dir' in one_error(capsys, [str(tmp_path), '--out', out])
    log = write_log(tmp_path / 'a' / 'scalars.json', 'gc', 0)
    message = one_error(capsys, [str(log), str(log), '--out', out, '--labels', 'x'])
    assert '--labels gives 1 labels for 2 runs' in message
    assert not Path(out).exists()


def test_cli_error_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(TOOL), str(tmp_path / 'missing'), '--out',
                           str(tmp_path / 'plots')], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ''
    assert proc.stderr.splitlines() == [
        f'plot_gc.py: error: {tmp_path / "missing"}: no such file or directory']
