"""tools/analysis_tools/gc_results.py and its data file, paper_results.json: the paper's numbers
and the configs of every row; finished runs (faked as mmengine lays them out, and one real tiny
Runner run) read, matched to their rows and tabulated beside the paper; bad work dirs skipped
with one warning each."""
import importlib.util
import json
import math
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.evaluator import BaseMetric
from mmengine.registry import DATASETS, METRICS, MODELS

from ..test_utils.toy import ToyDataset, ToyModel

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / 'tools' / 'analysis_tools' / 'gc_results.py'
spec = importlib.util.spec_from_file_location('gc_results', TOOL)
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)
PAPER = json.loads((REPO / 'tools' / 'analysis_tools' / 'paper_results.json').read_text())
TABLES = {table['id']: table for table in PAPER['tables']}
ROWS = [(table['id'], row) for table in PAPER['tables'] for row in table['rows']]


# ------------------------------------------------------------------------------- the data file


def test_data_file_loads_with_every_table_of_the_paper():
    assert tool.load_paper(tool.DEFAULT_PAPER) == PAPER
    assert list(TABLES) == ['1', '2', '3', '4', '5', '7', '8', '9']
    for table in PAPER['tables']:
        source = table['source']
        assert source['arxiv'] == '2004.01461' and source['venue'] == 'ECCV 2020'
        assert str(source['table']) == table['id'] and table['title']
        for metric in table['metrics']:
            assert metric['unit'] == '%' and metric['log']['key']
    labels = {tid: [r['label'] for r in TABLES[tid]['rows'] if r.get('in_paper', True)]
              for tid in ('8', '9')}
    assert labels['8'] == ['R50', 'R101', 'X101-32x4d', 'X101-64x4d']
    assert labels['9'] == ['R50', 'R101', 'X101-32x4d', 'X101-64x4d', 'R50 (4c1f)', 'R101GN',
                           'R50GN+WS']
    # COCO: only the AP columns (box; box and mask), the numbers configs/README.md gives
    assert [m['key'] for m in TABLES['8']['metrics']] == ['bbox_AP']
    assert [m['log']['key'] for m in TABLES['9']['metrics']] == ['coco/bbox_mAP', 'coco/segm_mAP']
    assert all(m['primary'] for t in PAPER['tables'] for m in t['metrics'])
    for tid in ('8', '9'):
        assert 'configs/README.md' in TABLES[tid]['source']['numbers_from']
    # spot checks against the paper
    r50 = TABLES['8']['rows'][0]['paper']
    assert r50['baseline']['bbox_AP'] == 36.4 and r50['gc']['bbox_AP'] == 37.0
    gn = TABLES['9']['rows'][5]
    assert gn['paper']['gc']['segm_AP'] == 37.4 and gn['configs']['gc'].startswith('configs/gn/')
    assert TABLES['1']['rows'][0]['paper_std']['gc']['top1'] == 0.31
    assert TABLES['5']['metrics'][0]['log'] == dict(key='accuracy/top1', scale=-1.0,
                                                    offset=100.0)
    assert TABLES['5']['rows'][1]['paper']['baseline']['top1_err'] == 24.50


@pytest.mark.parametrize('tid, row', ROWS, ids=[f'{t}-{r["label"]}' for t, r in ROWS])
def test_data_file_rows(tid, row):
    keys = {metric['key'] for metric in TABLES[tid]['metrics']}
    if row.get('in_paper', True):
        for part in ('paper', 'paper_std'):
            for variant, values in (row.get(part) or {}).items():
                assert variant in ('baseline', 'gc') and set(values) <= keys
                for value in values.values():
                    assert isinstance(value, float) and math.isfinite(value)
        assert set(row['paper']['baseline']) == set(row['paper']['gc']) != set()
    else:
        assert row['paper'] is None and row['note']
    baseline, gc = row['configs']['baseline'], row['configs']['gc']
    for path in (baseline, gc):
        assert path is None or (REPO / path).is_file(), path
    if baseline and gc:
        # the GC twin: '_gc' in its name, beside its baseline, which it inherits
        base, twin = Path(baseline), Path(gc)
        assert twin.parent == base.parent and '_gc' in twin.stem
        assert any(twin.stem[:i] + twin.stem[i + 3:] == base.stem
                   for i in range(len(twin.stem)) if twin.stem.startswith('_gc', i))
        assert f"_base_ = './{base.name}'" in (REPO / gc).read_text()


def readme_detection_rows():
    """configs/README.md's detection table: baseline config -> the paper's AP cells
    (bbox_AP / segm_AP, without and with GC) as written there ('-', 'n/a' or a number)."""
    text = (REPO / 'configs' / 'README.md').read_text()
    lines = [line for line in text.splitlines() if line.startswith('| ')]
    header = next(line for line in lines if 'paper AP<sup>b</sup> w/o GC' in line)
    names = [cell.strip() for cell in header.strip().strip('|').split('|')]
    columns = {(key, variant): names.index(f'paper AP<sup>{sup}</sup> {side} GC')
               for key, sup in (('bbox_AP', 'b'), ('segm_AP', 'm'))
               for variant, side in (('baseline', 'w/o'), ('gc', 'w/'))}
    rows = {}
    for line in lines[lines.index(header) + 1:]:
        cells = [cell.strip() for cell in line.strip().strip('|').split('|')]
        if len(cells) != len(names):
            break
        config = re.search(r'\]\(([^)]+\.py)\)', cells[names.index('baseline config')])
        rows['configs/' + config.group(1)] = {where: cells[i] for where, i in columns.items()}
    return rows


def test_coco_numbers_are_those_of_configs_readme():
    """Tables 8 and 9 hold exactly the paper's AP numbers of configs/README.md (the project's
    source for them), row by row (matched by the baseline config), and nothing else."""
    readme = readme_detection_rows()
    assert len(readme) == 16
    seen = set()
    for tid in ('8', '9'):
        for row in TABLES[tid]['rows']:
            cells = readme[row['configs']['baseline']]
            seen.add(row['configs']['baseline'])
            if not row.get('in_paper', True):
                assert {cells[('bbox_AP', v)] for v in ('baseline', 'gc')} == {'n/a'}
                continue
            assert 'paper_std' not in row
            for variant in ('baseline', 'gc'):
                stored = row['paper'][variant]
                expected = {key: float(cell) for (key, v), cell in cells.items()
                            if v == variant and cell not in ('-', 'n/a')}
                assert stored == expected, (tid, row['label'], variant)
                assert set(stored) == ({'bbox_AP'} if tid == '8' else {'bbox_AP', 'segm_AP'})
    assert seen == set(readme)                  # every README row is in a table


def test_data_file_settings_match_the_configs():
    """Rows sharing a config (Tables 2-4) tell runs apart by the optimizer settings: the plain
    configs land in their Table 2 rows, the other rows vary one setting on the command line."""
    configs = {}
    for tid, row in ROWS:
        if not row.get('settings'):
            continue
        path = row['configs']['baseline']
        if path not in configs:
            optimizer = Config.fromfile(str(REPO / path),
                                        import_custom_modules=False).optim_wrapper.optimizer
            configs[path] = {'optim_wrapper.optimizer.lr': optimizer.lr,
                             'optim_wrapper.optimizer.weight_decay': optimizer.weight_decay}
        plain = configs[path]
        assert set(row['settings']) == set(plain)
        changed = [key for key in plain if not math.isclose(plain[key], row['settings'][key])]
        assert len(changed) <= 1 and (tid != '2' or not changed), (tid, row['label'])
        if tid != '2':
            assert (not changed) == ('as they are' in row['note']), row['label']
    assert len(configs) == 5


# ------------------------------------------------------------------------- fake finished runs


def fake_run(root: Path, name: str, stem: str, *, test=None, val=(), max_epochs=12,
             extra='', stamp='20240102_030405') -> str:
    """A work dir as mmengine leaves it: the config copy, and a log folder with the log, the
    training's vis_data/scalars.json (a training line, then one line per validation) and,
    for a test run, <timestamp>.json."""
    work_dir = root / name
    log = work_dir / stamp
    (log / 'vis_data').mkdir(parents=True)
    (work_dir / f'{stem}.py').write_text(
        f"train_cfg = dict(type='EpochBasedTrainLoop', max_epochs={max_epochs}, "
        f"val_interval=1)\n{extra}")
    (log / f'{stamp}.log').write_text('mmengine - INFO - ...\n')
    (log / 'vis_data' / 'config.py').write_text('')
    if test is not None:
        (log / f'{stamp}.json').write_text(json.dumps(dict(test, data_time=0.1, time=0.2)))
    if val:
        lines = [dict(lr=0.02, loss=1.5, epoch=1, iter=10, step=10)]
        lines += [dict(metrics, data_time=0.1, time=0.2, step=step) for step, metrics in val]
        (log / 'vis_data' / 'scalars.json').write_text(
            ''.join(json.dumps(line) + '\n' for line in lines))
    return str(work_dir)


def coco(ap, ap50, ap75, segm=None):
    metrics = {'coco/bbox_mAP': ap, 'coco/bbox_mAP_50': ap50, 'coco/bbox_mAP_75': ap75}
    if segm:
        metrics.update(zip(['coco/segm_mAP', 'coco/segm_mAP_50', 'coco/segm_mAP_75'], segm))
    return metrics


def cells(out, label):
    """The cells of the first printed row with that label."""
    line = next(line for line in out.splitlines() if line.startswith(f'| {label} '))
    return [cell.strip() for cell in line.strip('|').split('|')]


def run_tool(argv, capsys):
    code = tool.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_seeds_of_a_table_8_row(tmp_path, capsys):
    base, gc = 'faster-rcnn_r50_fpn_1x_coco', 'faster-rcnn_r50_fpn_gc_1x_coco'
    runs = {
        'b0': (base, coco(0.370, 0.581, 0.399)), 'b1': (base, coco(0.375, 0.588, 0.404)),
        'g0': (gc, coco(0.379, 0.592, 0.411)), 'g1': (gc, coco(0.382, 0.590, 0.413))}
    dirs = [fake_run(tmp_path, name, stem, test=metrics) for name, (stem, metrics) in runs.items()]
    # a GC run without a test: its training's last validation (at the last epoch) counts
    dirs.append(fake_run(tmp_path, 'g2', gc, val=[(11, coco(0.2, 0.3, 0.25)),
                                                  (12, coco(0.384, 0.595, 0.415))]))
    out_json = tmp_path / 'out.json'
    code, out, err = run_tool([*dirs, '--json', out_json], capsys)
    assert code == 0 and err == ''
    result = json.loads(out_json.read_text())
    assert [t['id'] for t in result['tables']] == ['8']
    assert [(r['work_dir'], r['source']) for r in result['runs']] == [
        (d, 'test') for d in dirs[:4]] + [(dirs[4], 'val')]
    assert result['runs'][4]['step'] == 12
    rows = result['tables'][0]['rows']
    assert [r['label'] for r in rows][:4] == ['R50', 'R101', 'X101-32x4d', 'X101-64x4d']
    base_ap = [37.0, 37.5]
    gc_ap = [37.9, 38.2, 38.4]
    cell = rows[0]['metrics']['bbox_AP']
    assert cell['paper'] == dict(baseline=36.4, gc=37.0, baseline_std=None, gc_std=None,
                                 delta=pytest.approx(0.6))
    yours = cell['yours']
    assert yours['baseline']['values'] == pytest.approx(base_ap)
    assert yours['baseline']['mean'] == pytest.approx(statistics.mean(base_ap))
    assert yours['baseline']['std'] == pytest.approx(statistics.stdev(base_ap))
    assert yours['gc']['n'] == 3 and yours['gc']['mean'] == pytest.approx(statistics.mean(gc_ap))
    assert yours['gc']['std'] == pytest.approx(statistics.stdev(gc_ap))
    assert yours['delta'] == pytest.approx(statistics.mean(gc_ap) - statistics.mean(base_ap))
    assert cell['gc_minus_paper'] == pytest.approx(statistics.mean(gc_ap) - 37.0)
    assert cell['baseline_minus_paper'] == pytest.approx(statistics.mean(base_ap) - 36.4)
    assert set(rows[0]['metrics']) == {'bbox_AP'}          # the logged AP50 / AP75 unused
    assert rows[1]['metrics']['bbox_AP']['yours'] == dict(baseline=None, gc=None, delta=None)
    assert rows[0]['work_dirs'] == dict(baseline=dirs[:2], gc=dirs[2:])

    # the printed table: the same numbers, rows without runs show the paper's and '-'
    assert cells(out, 'R50') == [
        'R50', '36.4', '37.0', '+0.6',
        f'{statistics.mean(base_ap):.2f} +- {statistics.stdev(base_ap):.2f} (n=2)',
        f'{statistics.mean(gc_ap):.2f} +- {statistics.stdev(gc_ap):.2f} (n=3)',
        f'{statistics.mean(gc_ap) - statistics.mean(base_ap):+.2f}',
        f'{statistics.mean(base_ap) - 36.4:+.2f}', f'{statistics.mean(gc_ap) - 37.0:+.2f}']
    assert cells(out, 'R101') == [
        'R101', '38.5', '38.9', '+0.4', '-', '-', '-', '-', '-']
    assert 'AP: COCO box AP (%)' in out and 'AP.5' not in out
    # every metric of the table is primary: --all-metrics prints the same
    code, all_out, _ = run_tool([*dirs, '--all-metrics'], capsys)
    assert code == 0 and all_out == out


def test_all_metrics_prints_the_metrics_a_paper_file_marks_not_primary(tmp_path, capsys):
    """A --paper file may store more metrics of a row than the primary ones (here AP.5 beside
    AP, with made-up paper numbers): printed with --all-metrics only, in the JSON always."""
    metric = dict(unit='%', higher_is_better=True)
    paper = dict(tables=[dict(
        id='det', title='a detection table', decimals=1, metrics=[
            dict(metric, key='ap', name='AP', description='box AP', primary=True,
                 log=dict(key='coco/bbox_mAP', scale=100.0, offset=0.0)),
            dict(metric, key='ap50', name='AP.5', description='box AP at IoU 0.5',
                 primary=False, log=dict(key='coco/bbox_mAP_50', scale=100.0, offset=0.0))],
        rows=[dict(label='R50', paper=dict(baseline=dict(ap=30.0, ap50=50.0),
                                           gc=dict(ap=31.0, ap50=52.0)),
                   configs=dict(baseline='configs/faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
                                gc='configs/faster_rcnn/faster-rcnn_r50_fpn_gc_1x_coco.py'))])])
    paper_file = tmp_path / 'paper.json'
    paper_file.write_text(json.dumps(paper))
    base50, gc50 = [0.51, 0.515], [0.53]
    dirs = [fake_run(tmp_path, f'b{i}', 'faster-rcnn_r50_fpn_1x_coco', test=coco(0.3, v, 0.33))
            for i, v in enumerate(base50)]
    dirs.append(fake_run(tmp_path, 'g0', 'faster-rcnn_r50_fpn_gc_1x_coco',
                         test=coco(0.31, gc50[0], 0.34)))
    out_json = tmp_path / 'out.json'
    code, out, err = run_tool([*dirs, '--paper', paper_file, '--json', out_json], capsys)
    assert code == 0 and err == ''
    assert 'AP: box AP (%)' in out and 'AP.5' not in out
    cell = json.loads(out_json.read_text())['tables'][0]['rows'][0]['metrics']['ap50']
    base, gc = [100 * v for v in base50], [100 * v for v in gc50]
    assert cell['yours']['baseline']['mean'] == pytest.approx(statistics.mean(base))
    assert cell['yours']['baseline']['std'] == pytest.approx(statistics.stdev(base))
    assert cell['yours']['delta'] == pytest.approx(gc[0] - statistics.mean(base))
    assert cell['paper']['delta'] == pytest.approx(2.0)
    code, out, _ = run_tool([*dirs, '--paper', paper_file, '--all-metrics'], capsys)
    assert code == 0 and 'AP.5: box AP at IoU 0.5 (%)' in out
    assert cells(out.split('AP.5: ')[1], 'R50') == [
        'R50', '50.0', '52.0', '+2.0',
        f'{statistics.mean(base):.2f} +- {statistics.stdev(base):.2f} (n=2)', f'{gc[0]:.2f} (n=1)',
        f'{gc[0] - statistics.mean(base):+.2f}', f'{statistics.mean(base) - 50:+.2f}',
        f'{gc[0] - 52:+.2f}']


def test_mask_rcnn_errors_and_settings_pick_their_rows(tmp_path, capsys):
    """Table 9 (box and mask AP), Table 5 (top-1 error from accuracy) and the CIFAR rows that
    share a config (Tables 2-4: by the copied config's lr and weight decay)."""
    optimizer = "optim_wrapper = dict(optimizer=dict(lr={}, type='SGD', weight_decay={}))\n"
    dirs = [
        fake_run(tmp_path, 'mask', 'mask-rcnn_r50_fpn_gc_1x_coco',
                 test=coco(0.38, 0.6, 0.41, segm=(0.351, 0.562, 0.372))),
        fake_run(tmp_path, 'in1k', 'resnet50-gn_4xb64_in1k', test={'accuracy/top1': 75.25}),
        fake_run(tmp_path, 'plain', 'resnet50_1xb128_cifar100', max_epochs=200,
                 extra=optimizer.format(0.1, 0.0005), val=[(200, {'accuracy/top1': 78.5})]),
        fake_run(tmp_path, 'wd0', 'resnet50_1xb128_cifar100', max_epochs=200,
                 extra=optimizer.format(0.1, 0.0), val=[(200, {'accuracy/top1': 72.0})])]
    out_json = tmp_path / 'out.json'
    code, out, err = run_tool([*dirs, '--json', out_json], capsys)
    assert code == 0 and err == ''
    result = json.loads(out_json.read_text())
    assert [r['rows'] for r in result['runs']] == [
        [dict(table='9', row='R50', variant='gc')],
        [dict(table='5', row='R50 GN', variant='baseline')],
        [dict(table='2', row='SGDM', variant='baseline'),
         dict(table='3', row='wd 5e-4', variant='baseline'),
         dict(table='4', row='SGDM 0.1', variant='baseline')],
        [dict(table='3', row='wd 0', variant='baseline')]]
    tables = {t['id']: t for t in result['tables']}
    assert list(tables) == ['2', '3', '4', '5', '9']
    mask = tables['9']['rows'][0]['metrics']
    assert mask['segm_AP']['yours']['gc']['mean'] == pytest.approx(35.1)
    assert mask['segm_AP']['gc_minus_paper'] == pytest.approx(35.1 - 34.7)
    err_cell = tables['5']['rows'][1]['metrics']['top1_err']
    assert err_cell['yours']['baseline']['mean'] == pytest.approx(100 - 75.25)
    assert err_cell['baseline_minus_paper'] == pytest.approx(100 - 75.25 - 24.50)
    wd = [r['metrics']['top1']['yours']['baseline'] for r in tables['3']['rows']]
    assert wd[0]['values'] == [72.0] and wd[3]['values'] == [78.5]
    assert wd[1] is None and wd[2] is None and wd[4] is None
    assert 'lower is better' in out and 'APm: COCO mask AP (%)' in out
    # --table: only those tables, also without runs
    code, out, _ = run_tool([*dirs, '--table', '1', '9'], capsys)
    assert code == 0 and 'Table 1: ' in out and 'Table 9: ' in out and 'Table 3: ' not in out


# ------------------------------------------------------------------- a real run with mmengine


class GcResultsToyTop1(BaseMetric):
    """A score from the toy model's predictions, logged as accuracy/top1; every value computed
    is kept, to compare with what the tool reads."""
    default_prefix = 'accuracy'
    computed = []

    def process(self, data_batch, data_samples):
        # data_samples: the model's predictions, one 0-d tensor per sample
        self.results.extend(abs(float(prediction) - float(target))
                            for prediction, target in zip(data_samples, data_batch['targets']))

    def compute_metrics(self, results):
        value = 100.0 / (1.0 + sum(results) / len(results))
        GcResultsToyTop1.computed.append(value)
        return {'top1': value}


MODELS.register_module('GcResultsToyModel', module=ToyModel, force=True)
DATASETS.register_module('GcResultsToyDataset', module=ToyDataset, force=True)
METRICS.register_module('GcResultsToyTop1', module=GcResultsToyTop1, force=True)

TOY_CONFIG = """
default_scope = 'mmengine'
model = dict(type='GcResultsToyModel')
loader = dict(batch_size=4, num_workers=0, collate_fn=dict(type='default_collate'),
              sampler=dict(type='DefaultSampler', shuffle=False))
train_dataloader = dict(loader, dataset=dict(type='GcResultsToyDataset', length=8))
val_dataloader = dict(loader, dataset=dict(type='GcResultsToyDataset', length=8))
test_dataloader = val_dataloader
val_evaluator = dict(type='GcResultsToyTop1')
test_evaluator = val_evaluator
train_cfg = dict(by_epoch=True, max_epochs=2, val_interval=1)
val_cfg = dict()
test_cfg = dict()
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.05))
default_hooks = dict(logger=dict(type='LoggerHook', interval=1),
                     checkpoint=dict(type='CheckpointHook', interval=100))
randomness = dict(seed=0)
"""


def test_a_real_mmengine_run(tmp_path, capsys):
    """A training (validated after each of its 2 epochs) and a test run, each by mmengine's
    Runner into a work dir of its own, read through a paper file with one toy row."""
    from mmengine.runner import Runner
    configs = tmp_path / 'configs'
    configs.mkdir()
    for stem in ('toy_1xb4_toy', 'toy_gc_1xb4_toy'):
        (configs / f'{stem}.py').write_text(TOY_CONFIG)
    paper = dict(tables=[dict(
        id='toy', title='a toy table', decimals=2,
        metrics=[dict(key='top1', name='top-1', description='toy score', unit='%',
                      log=dict(key='accuracy/top1', scale=1.0, offset=0.0))],
        rows=[dict(label='toy', paper=dict(baseline=dict(top1=50.0), gc=dict(top1=55.0)),
                   configs=dict(baseline='configs/toy_1xb4_toy.py',
                                gc='configs/toy_gc_1xb4_toy.py'))])])
    paper_file = tmp_path / 'paper.json'
    paper_file.write_text(json.dumps(paper))

    GcResultsToyTop1.computed.clear()
    train_cfg = Config.fromfile(str(configs / 'toy_1xb4_toy.py'))
    train_cfg.work_dir = str(tmp_path / 'train')
    Runner.from_cfg(train_cfg).train()
    assert len(GcResultsToyTop1.computed) == 2
    validated = GcResultsToyTop1.computed[-1]
    assert validated != GcResultsToyTop1.computed[0]       # trained between the validations
    test_cfg = Config.fromfile(str(configs / 'toy_gc_1xb4_toy.py'))
    test_cfg.work_dir = str(tmp_path / 'test')
    tested = Runner.from_cfg(test_cfg).test()['accuracy/top1']
    assert tested == GcResultsToyTop1.computed[-1]

    capsys.readouterr()                                     # the Runners' logs
    out_json = tmp_path / 'out.json'
    code, out, err = run_tool([tmp_path / 'train', tmp_path / 'test', '--paper', paper_file,
                               '--json', out_json], capsys)
    assert code == 0 and err == ''
    result = json.loads(out_json.read_text())
    assert [(r['config'], r['source'], r['step']) for r in result['runs']] == [
        ('toy_1xb4_toy', 'val', 2), ('toy_gc_1xb4_toy', 'test', None)]
    assert Path(result['runs'][0]['file']).parts[-2:] == ('vis_data', 'scalars.json')
    test_file = Path(result['runs'][1]['file'])
    assert test_file.name == f'{test_file.parent.name}.json'
    cell = result['tables'][0]['rows'][0]['metrics']['top1']
    assert cell['yours']['baseline']['values'] == [pytest.approx(validated, rel=1e-9)]
    assert cell['yours']['gc']['values'] == [pytest.approx(tested, rel=1e-9)]
    assert cell['gc_minus_paper'] == pytest.approx(tested - 55.0)
    assert cells(out, 'toy') == ['toy', '50.00', '55.00', '+5.00', f'{validated:.2f} (n=1)',
                                 f'{tested:.2f} (n=1)', f'{tested - validated:+.2f}',
                                 f'{validated - 50:+.2f}', f'{tested - 55:+.2f}']


# ---------------------------------------------------------------------------------- bad input


def test_bad_work_dirs_are_skipped_with_one_warning_each(tmp_path, capsys):
    good = fake_run(tmp_path, 'good', 'faster-rcnn_r50_fpn_1x_coco', test=coco(0.37, 0.58, 0.4))
    (tmp_path / 'empty').mkdir()
    unknown = fake_run(tmp_path, 'unknown', 'retinanet_r50_fpn_1x_coco', test=coco(0.3, 0.5, 0.3))
    unfinished = fake_run(tmp_path, 'unfinished', 'faster-rcnn_r50_fpn_gc_1x_coco',
                          val=[(5, coco(0.3, 0.5, 0.3))])
    noresult = fake_run(tmp_path, 'noresult', 'faster-rcnn_r101_fpn_1x_coco')
    garbled = fake_run(tmp_path, 'garbled', 'faster-rcnn_r50_fpn_gc_1x_coco',
                       val=[(12, coco(0.38, 0.59, 0.41))])
    scalars = Path(garbled) / '20240102_030405' / 'vis_data' / 'scalars.json'
    lines = scalars.read_text().splitlines()
    scalars.write_text('\n'.join([lines[0], '{"coco/bbox_mAP": 0.9, "st', 'nonsense', lines[1]]))
    lr = fake_run(tmp_path, 'lr', 'resnet50_1xb128_cifar100', max_epochs=200,
                  extra="optim_wrapper = dict(optimizer=dict(lr=0.3, weight_decay=0.0005))\n",
                  val=[(200, {'accuracy/top1': 70.0})])
    bad = [tmp_path / 'empty', tmp_path / 'missing', unknown, unfinished, noresult, lr]
    code, out, err = run_tool([good, garbled, *bad], capsys)
    assert code == 0
    warnings = err.splitlines()
    assert all(line.startswith('gc_results.py: warning: ') for line in warnings)
    expected = [
        f'{garbled}/20240102_030405/vis_data/scalars.json: skipped 2 malformed line(s)',
        f'{tmp_path / "empty"}: not an mmengine work dir (no config copy',
        f'{tmp_path / "missing"}: not a directory',
        f'{unknown}: its config (retinanet_r50_fpn_1x_coco.py) is in no table',
        f'{unfinished}: training not finished (last validation at step 5 of 12)',
        f'{noresult}: no evaluation results',
        f'{lr}: resnet50_1xb128_cifar100 with optim_wrapper.optimizer.lr=0.3, '
        'optim_wrapper.optimizer.weight_decay=0.0005 matches no row of table(s) 2, 3, 4']
    assert len(warnings) == len(expected)
    for line, start in zip(warnings, expected):
        assert line[len('gc_results.py: warning: '):].startswith(start), line
    assert '| R50 ' in out and '38.00 (n=1)' in out          # the garbled file's good line

    # nothing collected at all: exit status 2, one error line after the warnings
    code, out, err = run_tool(bad, capsys)
    assert code == 2 and out == ''
    assert err.splitlines()[-1] == (f'gc_results.py: error: no results collected from '
                                    f'{len(bad)} work dir(s)')
    code, out, err = run_tool([good, '--table', '1'], capsys)
    assert code == 2 and 'no results collected for table(s) 1' in err


def test_no_traceback_on_bad_input(tmp_path):
    """As a command: bad paper file, unknown table, unreadable metrics; one line each."""
    test_json = Path(fake_run(tmp_path, 'run', 'faster-rcnn_r50_fpn_1x_coco', test={}))
    next(test_json.glob('*/*.json')).write_text('{"coco/bbox_mAP": ')
    (tmp_path / 'paper.json').write_text('{"tables": [')

    def run(*argv):
        done = subprocess.run([sys.executable, str(TOOL), *map(str, argv)], capture_output=True,
                              text=True, timeout=60)
        assert 'Traceback' not in done.stderr and done.stdout == ''
        return done.returncode, done.stderr.splitlines()

    code, err = run(test_json, '--paper', tmp_path / 'paper.json')
    assert code == 2 and len(err) == 1 and 'is not valid JSON' in err[0]
    code, err = run(test_json, '--table', '6')
    assert code == 2 and err == [f'gc_results.py: error: no table 6 in {tool.DEFAULT_PAPER} '
                                 '(it has 1, 2, 3, 4, 5, 7, 8, 9)']
    code, err = run(test_json)
    assert code == 2 and len(err) == 3
    assert 'skipped 1 malformed line(s)' in err[0] and 'no evaluation results' in err[1]


def test_copied_configs_are_read_not_run(tmp_path):
    marker = tmp_path / 'ran'
    dump = tmp_path / 'cfg.py'
    dump.write_text(f"optim_wrapper = dict(optimizer=dict(lr=0.1, betas=(0.9, 0.999)))\n"
                    f"hook = __import__('pathlib').Path({str(marker)!r}).touch()\n"
                    f"train_cfg = dict(by_epoch=False, max_iters=-(-90000))\n")
    config = tool.read_config_dump(dump)
    assert not marker.exists()
    assert config['optim_wrapper'] == dict(optimizer=dict(lr=0.1, betas=(0.9, 0.999)))
    assert config['hook'] is tool.UNREADABLE
    assert tool.max_step(config) == 90000
    assert tool.lookup(config, 'optim_wrapper.optimizer.momentum') is tool.UNREADABLE
    dump.write_text('def broken(:\n')
    assert tool.read_config_dump(dump) is None
