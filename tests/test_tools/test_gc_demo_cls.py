"""The classification demo: its configs (configs/demo/*digits*.py) and tools/misc/gc_demo_cls.py,
by a tiny real run (2 seeds, 2 epochs of one 64-image batch, both settings)."""
import contextlib
import importlib.util
import io
import json
import re
import statistics
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location('gc_demo_cls', REPO / 'tools/misc/gc_demo_cls.py')
demo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(demo)

PAIRS = [(s.baseline, s.gc, s.baseline_name, s.gc_name) for s in demo.SETTINGS.values()]
CONFIGS = [config for pair in PAIRS for config in pair[:2]]
SEEDS = (0, 1)


# ------------------------------------------------------------------------------- the configs


@pytest.mark.parametrize('baseline, gc, baseline_type, gc_type', PAIRS)
def test_twins_differ_only_in_the_optimizer_type(baseline, gc, baseline_type, gc_type):
    base = Config.fromfile(str(REPO / baseline)).to_dict()
    twin = Config.fromfile(str(REPO / gc)).to_dict()
    assert base['optim_wrapper']['optimizer'].pop('type') == baseline_type
    assert twin['optim_wrapper']['optimizer'].pop('type') == gc_type
    assert base == twin
    assert base['custom_imports'] == dict(imports=['mmgc'],
                                          allow_failed_imports=False)
    assert base['default_scope'] == 'mmpretrain'
    assert base['train_dataloader']['dataset'] == dict(
        type='DigitsDataset', split='train', pipeline=base['train_dataloader']['dataset']
        ['pipeline'])
    assert base['val_dataloader']['dataset']['split'] == 'test'
    # the twin states its difference and nothing else
    code = [line for line in (REPO / gc).read_text().splitlines()
            if line.strip() and not line.startswith('#')]
    assert code == [f"_base_ = './{Path(baseline).name}'",
                    f"optim_wrapper = dict(optimizer=dict(type='{gc_type}'))"]


@pytest.mark.parametrize('config', CONFIGS)
def test_config_builds_and_takes_a_train_step(config):
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner
    from mmengine.utils import import_modules_from_strings
    cfg = Config.fromfile(str(REPO / config))
    import_modules_from_strings(**cfg.custom_imports)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        from mmpretrain.registry import MODELS
        model = MODELS.build(cfg.model)
        model.init_weights()
        optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
        loader = cfg.train_dataloader.copy()
        loader.update(batch_size=16)
        batch = next(iter(Runner.build_dataloader(loader, seed=0)))
    assert type(optim_wrapper.optimizer).__name__ == cfg.optim_wrapper.optimizer.type
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    loss = float(model.train_step(batch, optim_wrapper)['loss'].detach())
    assert 2.0 < loss < 2.6                                  # about ln(10) from scratch
    weights = [name for name, p in model.named_parameters() if p.ndim > 1]
    assert len(weights) == (21 if 'resnet' in config else 4)   # the conv and fc weights
    assert [name for name in weights
            if torch.equal(before[name], model.get_parameter(name))] == []


# ------------------------------------------------------------------------------- the tool


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """Runs the demo once, tiny; returns its work dir, what it printed and its summaries."""
    work = tmp_path_factory.mktemp('demo_cls')
    printed = io.StringIO()
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(printed):
            summaries = demo.main(['--seeds', str(len(SEEDS)), '--epochs', '2',
                                   '--train-size', '64', '--work-dir', str(work),
                                   '--min-top1', '0'])
    finally:
        torch.set_num_threads(threads)
    return work, printed.getvalue(), summaries


def results(work: Path, config: str) -> list:
    return [json.loads((work / Path(config).stem / f'seed{s}' / 'result.json').read_text())
            for s in SEEDS]


def block(text: str, title_start: str) -> list:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title_start))
    return lines[start:start + 7]


def test_progress_lines_and_table_rows(tiny):
    work, text, summaries = tiny
    progress = re.findall(r'^\[ ?(\d)/8\] (\S+) +(\S+) +seed (\d)  top-1 +([0-9.]+) .* s$',
                          text, re.M)
    assert [(int(n), setting, name, int(seed)) for n, setting, name, seed, _ in progress] == [
        (1, 'resnet18-sgd', 'SGD', 0), (2, 'resnet18-sgd', 'SGDGC', 0),
        (3, 'resnet18-sgd', 'SGD', 1), (4, 'resnet18-sgd', 'SGDGC', 1),
        (5, 'lenet5-adamw', 'AdamW', 0), (6, 'lenet5-adamw', 'AdamWGC', 0),
        (7, 'lenet5-adamw', 'AdamW', 1), (8, 'lenet5-adamw', 'AdamWGC', 1)]
    for title, names in (('ResNet-18 with BN', ('SGD (baseline)', 'SGDGC')),
                         ('LeNet-5', ('AdamW (baseline)', 'AdamWGC'))):
        lines = block(text, title)
        assert lines[0].endswith(', 2 epochs, 2 seeds')
        assert lines[1].split() == ['top-1', '(%)', 'training', 'loss', 'at', 'ep', '1',
                                    'ep', '2']
        assert set(lines[2]) == {'-'}
        assert [line[:18].strip() for line in lines[3:6]] == [*names, 'GC - baseline']
        assert lines[6].startswith('  paired top-1 difference per seed: ')
    assert list(summaries) == ['resnet18-sgd', 'lenet5-adamw']
    assert json.loads((work / 'summary.json').read_text()) == json.loads(json.dumps(summaries))


def test_the_two_variants_of_a_seed_start_from_the_same_weights_and_data(tiny):
    work = tiny[0]
    for baseline, gc, _, _ in PAIRS:
        base, twin = results(work, baseline), results(work, gc)
        for b, g in zip(base, twin):
            assert b['initial_weights'] == g['initial_weights']
            assert b['data_order'] == g['data_order']
            # one batch per epoch: the first loss is taken before any step, so it is the same
            assert b['epoch_losses'][0] == g['epoch_losses'][0]
            assert b['epoch_losses'][1] != g['epoch_losses'][1]    # then the optimizers differ
        # and the seed matters
        assert base[0]['initial_weights'] != base[1]['initial_weights']
        assert base[0]['data_order'] != base[1]['data_order']


def test_the_recorded_fingerprint_is_that_of_the_initial_weights(tiny):
    """Rebuild seed 1 of a baseline outside the tool: the weights mmengine initializes are the
    ones the hook fingerprinted."""
    from mmengine.runner import Runner
    work = tiny[0]
    config = PAIRS[0][0]
    cfg = Config.fromfile(str(REPO / config))
    cfg.work_dir = str(work / 'rebuild')
    cfg.randomness = dict(seed=1, deterministic=False)
    cfg.experiment_name = 'rebuild_of_the_tiny_demo'
    with contextlib.redirect_stdout(io.StringIO()):
        runner = Runner.from_cfg(cfg)
    runner.model.init_weights()
    expected = demo.fingerprint(runner.model.state_dict().values())
    assert results(work, config)[1]['initial_weights'] == expected
    assert results(work, config)[0]['initial_weights'] != expected


def test_the_table_shows_the_numbers_of_the_runs(tiny):
    work, text, _ = tiny
    for (baseline, gc, _, _), title in zip(PAIRS, ('ResNet-18 with BN', 'LeNet-5')):
        base, twin = results(work, baseline), results(work, gc)
        lines = block(text, title)
        for line, runs in ((lines[3], base), (lines[4], twin)):
            top1 = [r['top1'] for r in runs]
            cells = line[18:].split()
            assert cells[:3] == [f'{statistics.mean(top1):.2f}', '+-',
                                 f'{statistics.stdev(top1):.2f}']
            assert cells[3:] == [f'{statistics.mean(r["epoch_losses"][e] for r in runs):.4f}'
                                 for e in (0, 1)]
        diffs = [g['top1'] - b['top1'] for b, g in zip(base, twin)]
        cells = lines[5][18:].split()
        assert cells[:3] == [f'{statistics.mean(diffs):+.2f}', '+-',
                             f'{statistics.stdev(diffs):.2f}']
        loss_diffs = [[g['epoch_losses'][e] - b['epoch_losses'][e] for b, g in zip(base, twin)]
                      for e in (0, 1)]
        assert cells[3:] == [f'{statistics.mean(d):+.4f}' for d in loss_diffs]
        wins = sum(d > 0 for d in diffs)
        ties = sum(d == 0 for d in diffs)
        assert lines[6] == ('  paired top-1 difference per seed: '
                            + ' '.join(f'{d:+.2f}' for d in diffs)
                            + f'; GC higher in {wins}/2, equal in {ties}, '
                            f'lower in {2 - wins - ties}')


def test_weak_runs_are_named(tiny):
    summaries = tiny[2]
    assert demo.weak_runs(summaries, 0.0) == []
    weak = demo.weak_runs(summaries, 100.0)
    assert len(weak) == 8 and weak[0].startswith('resnet18-sgd SGD seed 0: ')


def test_unpaired_runs_are_refused():
    run = dict(seed=0, initial_weights='a', data_order='d', epochs=1, epoch_losses=[1.0],
               top1=50.0)
    runs = dict(baseline=[run], gc=[dict(run, initial_weights='b')])
    with pytest.raises(SystemExit, match='lenet5-adamw seed 0: the baseline and GC runs did '
                       'not start from the same weights'):
        demo.summarize('lenet5-adamw', runs)
    runs = dict(baseline=[run], gc=[dict(run, data_order='e')])
    with pytest.raises(SystemExit, match='same batches'):
        demo.summarize('lenet5-adamw', runs)
    summary = demo.summarize('lenet5-adamw', dict(baseline=[run], gc=[dict(run, top1=51.0)]))
    assert summary['diff']['top1'] == [1.0] and summary['diff']['top1_mean_std'] == (1.0, 0.0)


@pytest.mark.parametrize('argv, message', [
    (['--seeds', '0'], '--seeds must be at least 1, got 0'),
    (['--epochs', '-1'], '--epochs must be at least 1, got -1'),
    (['--settings', 'vgg'], "invalid choice: 'vgg'"),
])
def test_bad_arguments_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
