"""tools/misc/gc_repeat.py: the sweep's statistics and table from known numbers, one real tiny
sweep of the LeNet-5 digits pair (2 seeds, 2 iterations each, through tools/train.py and
tools/test.py; its fingerprints and summary checked, then resumed without training), and the
error paths with faked tools (fingerprints that differ, a failed training, bad input)."""
import json
import math
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
from scipy import stats

from ..test_configs.test_demo_configs import load_tool

repeat = load_tool('tools/misc/gc_repeat.py')

BASELINE = 'configs/demo/lenet5_adamw_digits.py'
GC = 'configs/demo/lenet5_adamw_gc_digits.py'
CONFIGS = dict(baseline=BASELINE, gc=GC)


# --- statistics and table ---------------------------------------------------------------------


def known_summary() -> dict:
    per_seed = {
        'baseline': [{'coco/bbox_mAP': 40.0, 'coco/bbox_mAP_s': None, 'accuracy/top1': 90.5},
                     {'coco/bbox_mAP': 41.0, 'coco/bbox_mAP_s': None, 'accuracy/top1': 91.0},
                     {'coco/bbox_mAP': 42.5, 'coco/bbox_mAP_s': None, 'accuracy/top1': 92.25},
                     {'coco/bbox_mAP': 39.5, 'coco/bbox_mAP_s': None, 'accuracy/top1': 90.0}],
        'gc': [{'coco/bbox_mAP': 41.0, 'coco/bbox_mAP_s': None, 'accuracy/top1': 90.0},
               {'coco/bbox_mAP': 41.0, 'coco/bbox_mAP_s': None, 'accuracy/top1': 91.5},
               {'coco/bbox_mAP': 43.5, 'coco/bbox_mAP_s': None, 'accuracy/top1': 92.0},
               {'coco/bbox_mAP': 40.0, 'coco/bbox_mAP_s': None, 'accuracy/top1': 91.0}],
    }
    return repeat.build_summary(CONFIGS, [3, 4, 5, 6], per_seed, title='Tiny')


def test_statistics_from_known_numbers():
    summary = known_summary()
    assert summary['metrics'] == ['coco/bbox_mAP', 'accuracy/top1']
    assert summary['unavailable'] == ['coco/bbox_mAP_s']
    assert summary['seeds'] == [3, 4, 5, 6] and summary['configs'] == CONFIGS
    for metric in summary['metrics']:
        base = np.array([row[metric] for row in summary['per_seed']['baseline']])
        gc = np.array([row[metric] for row in summary['per_seed']['gc']])
        st = summary['stats'][metric]
        for variant, values in (('baseline', base), ('gc', gc)):
            assert st[variant]['mean'] == pytest.approx(values.mean())
            assert st[variant]['std'] == pytest.approx(values.std(ddof=1))
        diff = gc - base
        assert st['diff']['per_seed'] == pytest.approx(diff.tolist())
        assert st['diff']['mean'] == pytest.approx(diff.mean())
        assert st['diff']['std'] == pytest.approx(diff.std(ddof=1))
        half = stats.t.ppf(0.975, 3) * diff.std(ddof=1) / math.sqrt(4)
        assert st['diff']['ci95'] == pytest.approx([diff.mean() - half, diff.mean() + half])
    box, top1 = summary['stats']['coco/bbox_mAP'], summary['stats']['accuracy/top1']
    assert (box['gc_won'], box['tied'], box['gc_lost']) == (3, 1, 0)
    assert (top1['gc_won'], top1['tied'], top1['gc_lost']) == (2, 0, 2)
    assert (box['label'], top1['label']) == ('box AP', 'top-1')
    json.dumps(summary)  # JSON as it is


def test_statistics_of_one_seed():
    summary = repeat.build_summary(CONFIGS, [7], {'baseline': [{'accuracy/top1': 90.0}],
                                                  'gc': [{'accuracy/top1': 89.0}]})
    st = summary['stats']['accuracy/top1']
    assert st['baseline'] == dict(mean=90.0, std=None)
    assert st['diff'] == dict(per_seed=[-1.0], mean=-1.0, std=None, ci95=None)
    assert (st['gc_won'], st['tied'], st['gc_lost']) == (0, 0, 1)
    assert summary['title'] == 'lenet5_adamw_digits vs lenet5_adamw_gc_digits'
    lines = repeat.table(summary).splitlines()
    assert lines[0] == 'lenet5_adamw_digits vs lenet5_adamw_gc_digits, 1 seed (7)'
    assert lines[2].split() == ['top-1', '90.00', '89.00', '-1.00', 'n/a', '0/1']


def test_table_text():
    half = stats.t.ppf(0.975, 3) * np.std([1, 0, 1, 0.5], ddof=1) / 2
    low, high = 0.625 - half, 0.625 + half
    expected = [
        'Tiny, 4 seeds (3-6)',
        'metric   baseline        GC              GC - baseline (paired)   95% CI'
        '           GC won',
        'box AP   40.8 +- 1.3     41.4 +- 1.5     +0.6 +- 0.5              '
        f'[{low:+.1f}, {high:+.1f}]     3/4 (1 tied)',
        'top-1    90.94 +- 0.97   91.12 +- 0.85   +0.19 +- 0.69            [-0.91, +1.28]'
        '   2/4',
        'mean +- sample std over seeds; paired: GC minus baseline of the same seed;',
        "95% CI: Student's t, n-1 degrees of freedom; GC won: seeds where GC is higher",
        'not shown (a run has no value): box APs',
    ]
    assert repeat.table(known_summary()).splitlines() == expected


def test_metrics_parsed_from_the_test_output():
    coco = ('06/01 12:00:00 - mmengine - INFO - Epoch(test) [10/10]    coco/bbox_mAP: 0.4120  '
            'coco/bbox_mAP_50: 0.6130  coco/bbox_mAP_s: -1.0000  coco/segm_mAP: 0.3500  '
            'data_time: 0.0123  time: 0.4560')
    output = '\n'.join(['Epoch(test) [ 5/10]    eta: 0:00:01  time: 0.1  data_time: 0.01',
                        'bbox_mAP_copypaste: 0.412 0.613', coco, 'done'])
    metrics = repeat.parse_metrics(output)
    assert metrics == {'coco/bbox_mAP': 0.412, 'coco/bbox_mAP_50': 0.613,
                       'coco/bbox_mAP_s': -1.0, 'coco/segm_mAP': 0.35}
    assert repeat.reported('coco/bbox_mAP', 0.412) == pytest.approx(41.2)
    assert repeat.reported('coco/bbox_mAP_s', -1.0) is None
    assert repeat.reported('accuracy/top1', 91.2) == 91.2
    assert [repeat.label(m) for m in metrics] == ['box AP', 'box AP50', 'box APs', 'mask AP']
    assert repeat.parse_metrics('Epoch(test) [1/1]    accuracy/top1: 91.2000  time: 0.1') == \
        {'accuracy/top1': 91.2}
    assert repeat.parse_metrics('Epoch(train) [1][2/2]  loss: 1.0') == {}
    assert repeat.resolve_metrics(['bbox_mAP', 'coco/segm_mAP'], list(metrics)) == \
        ['coco/bbox_mAP', 'coco/segm_mAP']
    with pytest.raises(SystemExit, match=r'--metrics top1 is not among .*coco/bbox_mAP_50'):
        repeat.resolve_metrics(['top1'], list(metrics))


def test_fingerprint_hook_covers_weights_first_batch_and_order(tmp_path):
    """The hook alone, on a detection-like batch (a list of uint8 images, samples whose metainfo
    names their image): what it records changes with each of the things it covers."""
    import logging
    from types import SimpleNamespace

    import torch
    from mmengine.structures import BaseDataElement

    def record(weight: float, pixel: int, order: List[str]) -> dict:
        model = torch.nn.Linear(2, 2)
        torch.nn.init.constant_(model.weight, weight)
        torch.nn.init.zeros_(model.bias)
        runner = SimpleNamespace(model=model, logger=logging.getLogger('test_gc_repeat'))
        hook = repeat.make_fingerprint_hook(str(tmp_path / 'fp.json'))
        hook.before_train(runner)
        for i, names in enumerate((order[:2], order[2:])):
            images = [torch.full((3, 4, 4), pixel if i == 0 else 0, dtype=torch.uint8)] * 2
            samples = [BaseDataElement(metainfo=dict(img_id=7, img_path=n)) for n in names]
            hook.before_train_iter(runner, i, dict(inputs=images, data_samples=samples))
        hook.after_train(runner)
        return json.loads((tmp_path / 'fp.json').read_text())

    base = record(0.5, 1, ['a.png', 'b.png', 'c.png', 'd.png'])
    assert base['first_batch_ids'] == ['img_path=a.png', 'img_path=b.png'] and base['iters'] == 2
    assert record(0.5, 1, ['a.png', 'b.png', 'c.png', 'd.png']) == base
    keys = ('weights', 'first_batch', 'data_order')
    changed = {'weights': record(0.25, 1, ['a.png', 'b.png', 'c.png', 'd.png']),
               'first_batch': record(0.5, 2, ['a.png', 'b.png', 'c.png', 'd.png']),
               'data_order': record(0.5, 1, ['a.png', 'b.png', 'd.png', 'c.png'])}
    for key, other in changed.items():
        assert [k for k in keys if other[k] != base[k]] == [key]


# --- one real sweep ------------------------------------------------------------------------------


SHORT = ['train_cfg.max_epochs=1', 'train_cfg.val_interval=1', 'param_scheduler.T_max=1',
         'train_dataloader.dataset.indices=128']


def test_real_sweep_then_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('OMP_NUM_THREADS', '1')  # light on shared cores; the runs are tiny
    plots: List[Tuple[list, Path]] = []
    monkeypatch.setattr(repeat, 'plot_runs', lambda runs, out: plots.append((list(runs), out)))
    work = tmp_path / 'sweep'
    argv = [BASELINE, GC, '--seeds', '2', '--first-seed', '3', '--work-dir', str(work),
            '--cfg-options', *SHORT]
    summary = repeat.main(argv)
    out = capsys.readouterr().out

    stems = [Path(c).stem for c in (BASELINE, GC)]
    runs = {v: [str(work / stem / f'seed{s}') for s in (3, 4)]
            for v, stem in zip(repeat.VARIANTS, stems)}
    assert summary['runs'] == runs
    assert plots == [(runs['baseline'] + runs['gc'], work / 'plots')]
    records = {}
    for variant in repeat.VARIANTS:
        for seed, run in zip((3, 4), runs[variant]):
            run = Path(run)
            for name in ('train_output.txt', 'fingerprint.json', 'last_checkpoint',
                         'test/test_output.txt', 'result.json'):
                assert (run / name).is_file(), name
            assert Path(run / 'last_checkpoint').read_text().strip() == str(run / 'epoch_1.pth')
            record = json.loads((run / 'result.json').read_text())
            assert (record['seed'], record['variant'], record['options']) == (seed, variant, SHORT)
            assert record['fingerprint']['iters'] == 2  # 128 images, batches of 64
            assert len(record['fingerprint']['first_batch_ids']) == 64
            train_output = (run / 'train_output.txt').read_text()
            assert f'randomness.seed={seed}' in train_output.splitlines()[0]
            assert 'fingerprint written to' in train_output
            records[variant, seed] = record

    # Same seed: the same start; another seed: another one.
    for seed in (3, 4):
        assert records['baseline', seed]['fingerprint'] == records['gc', seed]['fingerprint']
    assert records['baseline', 3]['fingerprint']['weights'] != \
        records['baseline', 4]['fingerprint']['weights']
    assert [{k: f[k] for k in ('seed', 'weights')} for f in summary['fingerprints']] == \
        [dict(seed=s, weights=records['baseline', s]['fingerprint']['weights']) for s in (3, 4)]

    # summary.json: what was returned, and its numbers from the runs' own records.
    assert json.loads((work / 'summary.json').read_text()) == summary
    assert summary['metrics'] == ['accuracy/top1'] and summary['seeds'] == [3, 4]
    top1 = {key: r['metrics']['accuracy/top1'] for key, r in records.items()}
    assert summary['per_seed'] == {v: [{'accuracy/top1': top1[v, s]} for s in (3, 4)]
                                   for v in repeat.VARIANTS}
    st = summary['stats']['accuracy/top1']
    diffs = [top1['gc', s] - top1['baseline', s] for s in (3, 4)]
    assert st['diff']['per_seed'] == pytest.approx(diffs)
    assert st['baseline']['mean'] == pytest.approx((top1['baseline', 3] + top1['baseline', 4]) / 2)
    assert st['gc']['std'] == pytest.approx(abs(top1['gc', 3] - top1['gc', 4]) / math.sqrt(2))
    half = stats.t.ppf(0.975, 1) * np.std(diffs, ddof=1) / math.sqrt(2)
    assert st['diff']['ci95'] == pytest.approx([np.mean(diffs) - half, np.mean(diffs) + half])
    assert st['gc_won'] + st['tied'] + st['gc_lost'] == 2
    assert repeat.table(summary) in out

    # Resumed: nothing trained again (no tool runs), the same summary.
    def no_tools(command, output_file):
        raise AssertionError(f'ran {command}')

    monkeypatch.setattr(repeat, 'run_tool', no_tools)
    assert repeat.main(argv + ['--metrics', 'top1']) == summary
    assert capsys.readouterr().out.count('finished earlier') == 4
    # Other options for the same runs: refused, not mixed in.
    with pytest.raises(SystemExit, match=r'result.json is of another run .* --force'):
        repeat.main(argv[:-1])


# --- faked tools: the error paths ----------------------------------------------------------------


class FakeTools:
    """Stands in for gc_repeat.run_tool: leaves what a training leaves (fingerprint, checkpoint
    pointer) and prints a test's metrics. ``weights[(config stem, seed)]`` overrides a
    training's weights fingerprint; ``fail`` names a config stem whose training fails."""

    def __init__(self):
        self.commands: List[List[str]] = []
        self.weights = {}
        self.fail = None

    def __call__(self, command: List[str], output_file: Path) -> Tuple[int, str]:
        self.commands.append(command)
        output_file.parent.mkdir(parents=True, exist_ok=True)
        output_file.write_text('output\n')
        if 'tools/test.py' in command:
            return 0, 'Epoch(test) [1/1]    accuracy/top1: 90.0000  data_time: 0.01  time: 0.1'
        config = command[command.index('tools/train.py') + 1]
        if Path(config).stem == self.fail:
            return 1, 'Traceback ...'
        work = Path(command[command.index('--work-dir') + 1])
        seed = int(next(o for o in command if o.startswith('randomness.seed='))[16:])
        (work / 'last_checkpoint').write_text(str(work / 'epoch_1.pth'))
        weights = self.weights.get((Path(config).stem, seed), f'w{seed}')
        Path(command[command.index(repeat.RECORD_FLAG) + 1]).write_text(json.dumps(dict(
            weights=weights, first_batch=f'b{seed}', data_order=f'o{seed}', iters=2)))
        return 0, ''


@pytest.fixture
def fake(monkeypatch):
    tools = FakeTools()
    monkeypatch.setattr(repeat, 'run_tool', tools)
    monkeypatch.setattr(repeat, 'plot_runs', lambda runs, out: None)
    return tools


def test_fingerprints_that_differ_stop_the_sweep(fake, tmp_path):
    fake.weights['lenet5_adamw_gc_digits', 1] = 'other'
    with pytest.raises(SystemExit, match=r'^error: seed 1: the baseline and GC trainings did not '
                       r'start alike: initial weights differ \(see "fingerprint" in .*seed1/'
                       r'result.json and .*'):
        repeat.main([BASELINE, GC, '--seeds', '3', '--work-dir', str(tmp_path)])
    assert len(fake.commands) == 8  # seeds 0 and 1 ran, seed 2 did not
    assert not (tmp_path / 'summary.json').exists()


def test_a_failed_training_names_the_run_and_keeps_the_finished(fake, tmp_path):
    fake.fail = 'lenet5_adamw_gc_digits'
    with pytest.raises(SystemExit) as error:
        repeat.main([BASELINE, GC, '--seeds', '2', '--work-dir', str(tmp_path)])
    message = str(error.value)
    assert message.startswith('error: the training of GC seed 0 (configs/demo/lenet5_adamw_gc_'
                              'digits.py) failed (exit status 1); its output: ')
    assert f'{tmp_path}/lenet5_adamw_gc_digits/seed0/train_output.txt' in message
    assert 'the same command resumes' in message
    assert (tmp_path / 'lenet5_adamw_digits' / 'seed0' / 'result.json').is_file()
    # Resumed: the finished baseline run is kept, the failed one trained again.
    fake.fail, fake.commands = None, []
    summary = repeat.main([BASELINE, GC, '--seeds', '2', '--work-dir', str(tmp_path)])
    trained = [c[c.index('tools/train.py') + 1] for c in fake.commands if 'tools/train.py' in c]
    assert trained == [GC, BASELINE, GC]
    assert summary['stats']['accuracy/top1']['tied'] == 2


def test_bad_input_is_one_line(fake, tmp_path, capsys):
    with pytest.raises(SystemExit, match='^error: config configs/demo/nothing.py not found$'):
        repeat.main(['configs/demo/nothing.py', GC, '--seeds', '2'])
    with pytest.raises(SystemExit, match='both configs are named lenet5_adamw_digits'):
        repeat.main([BASELINE, BASELINE, '--seeds', '2'])
    for extra, message in ((['--seeds', '0'], '--seeds must be at least 1, got 0'),
                           (['--seeds', '2', '--first-seed', '-1'], 'must be 0 or more'),
                           (['--seeds', '2', '--cfg-options', 'nokey'],
                            "KEY=VALUE pairs, got 'nokey'"),
                           (['--seeds', '2', '--cfg-options', 'randomness.seed=1'],
                            'randomness.seed is what the sweep sets')):
        with pytest.raises(SystemExit) as error:
            repeat.main([BASELINE, GC, *extra])
        assert error.value.code == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--metrics mAP is not among .*accuracy/top1"):
        repeat.main([BASELINE, GC, '--seeds', '1', '--work-dir', str(tmp_path), '--metrics',
                     'mAP'])
    assert not fake.commands[2:]  # stopped after the first run


def test_plots_missing_or_failing_are_a_warning(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(repeat, 'PLOT_TOOL', str(tmp_path / 'absent.py'))
    assert repeat.plot_runs(['a', 'b'], tmp_path / 'plots') is False
    assert 'absent.py not found: no plots' in capsys.readouterr().err
    tool = tmp_path / 'broken.py'
    tool.write_text('import sys\nprint("plot_gc.py: error: no logs")\nsys.exit(2)\n')
    monkeypatch.setattr(repeat, 'PLOT_TOOL', str(tool))
    assert repeat.plot_runs(['a', 'b'], tmp_path / 'plots') is False
    assert 'failed (exit status 2: plot_gc.py: error: no logs): no plots' in \
        capsys.readouterr().err
