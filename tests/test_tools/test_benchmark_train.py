"""tools/analysis_tools/benchmark_train.py: a real (tiny) run on the Faster R-CNN demo pair, on
the CPU, and its arguments."""
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / 'tools' / 'analysis_tools' / 'benchmark_train.py'
NUMBER = r'(\d+(?:\.\d+)?)'


def run_tool(*args):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='')  # the CPU path, also on a GPU machine
    env['PYTHONPATH'] = os.pathsep.join(p for p in (env.get('PYTHONPATH'), str(REPO)) if p)
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location('benchmark_train', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_faster_rcnn_pair_end_to_end(tmp_path):
    data_root, work_dir = tmp_path / 'data', tmp_path / 'work'
    proc = run_tool('--model', 'faster', '--warmup', '1', '--iters', '2', '--data-root',
                    data_root, '--work-dir', work_dir, '--cfg-options',
                    'optim_wrapper.optimizer.fused=True')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    out = proc.stdout
    assert 'loading annotations' not in out  # pycocotools' lines are kept out of the report
    assert re.search(r'^device: cpu \(CPU, \d+ threads\)  torch \S+  mmgc \S+$', out, re.M)
    # Which optimizer each config really built: torch's SGD, then mmgc's SGDGC.
    assert re.search(r'^baseline: +configs/demo/faster-rcnn_r18_fpn_synthetic\.py  optimizer: '
                     r'OptimWrapper\(SGD\) \(torch\.optim\.\S+\), GC off$', out, re.M), out
    assert re.search(r'^GC: +configs/demo/faster-rcnn_r18_fpn_gc_synthetic\.py  optimizer: '
                     r'OptimWrapper\(SGDGC\) \(mmgc\.optim\.\S+\), GC on$', out, re.M), out
    assert re.search(r'trainable tensors: \d+  values: [\d.]+ M  identical initial weights: yes',
                     out), out
    assert "cfg options (both): {'optim_wrapper.optimizer.fused': True}" in out
    assert ('2 interleaved pairs (same batch of 4 and same weights, alternating order) after 1 '
            'warm-up pairs') in out
    header = next(line for line in out.splitlines() if line.startswith('variant'))
    for column in ('optimizer', 'iteration ms', 'fwd+bwd ms', 'step ms', 'ratio'):
        assert column in header
    rows = {}
    for name, optimizer in (('baseline', 'SGD'), ('GC', 'SGDGC')):
        found = re.findall(rf'^{name} +OptimWrapper\({optimizer}\) +{NUMBER} +{NUMBER} +{NUMBER} '
                           rf'+{NUMBER}% +{NUMBER} +{NUMBER}->{NUMBER}$', out, re.M)
        assert len(found) == 1, out
        rows[name] = [float(value) for value in found[0]]
    for iteration, fwd_bwd, step, share, ratio, loss_first, loss_last in rows.values():
        assert iteration > 0 and fwd_bwd > 0 and step > 0 and ratio > 0
        assert step < iteration and fwd_bwd < iteration and 0 < share < 100
        assert loss_first > 0 and loss_last > 0
    assert rows['baseline'][4] == 1.0
    # The same batch and the same weights in each pair: the same loss.
    assert rows['baseline'][5] == rows['GC'][5]
    headline = re.search(rf'with GC / without \(median of 2 same-batch pairs\): {NUMBER}  '
                         rf'\(quartiles {NUMBER} \.\. {NUMBER}', out)
    assert headline, out
    ratio, q1, q3 = map(float, headline.groups())
    assert 0 < q1 <= ratio <= q3
    assert re.search(r'GC step cost: [-+]\d+\.\d+ ms per iteration', out)
    # Enough synthetic images for the 3 batches of 4 (and one to validate, unused); the runners
    # wrote their work dirs where asked.
    coco = json.loads((data_root / 'annotations' / 'instances_train.json').read_text())
    assert len(coco['images']) == 12
    assert (work_dir / 'baseline').is_dir() and (work_dir / 'gc').is_dir()


def test_cuda_without_cuda_is_one_error_line():
    proc = run_tool('--model', 'faster', '--device', 'cuda')
    assert proc.returncode != 0
    assert 'Traceback' not in proc.stderr + proc.stdout
    assert proc.stderr.strip().splitlines() == ['--device cuda: no CUDA device is available']


def test_arguments(tool):
    mask = ['configs/demo/mask-rcnn_r18_fpn_synthetic.py',
            'configs/demo/mask-rcnn_r18_fpn_gc_synthetic.py']
    args = tool.parse_args([])
    assert args.configs == mask
    assert (args.warmup, args.iters, args.device) == (3, 20, 'cpu')
    assert tool.parse_args(['--model', 'faster']).configs == [
        'configs/demo/faster-rcnn_r18_fpn_synthetic.py',
        'configs/demo/faster-rcnn_r18_fpn_gc_synthetic.py']
    assert tool.parse_args(['a.py', 'b.py']).configs == ['a.py', 'b.py']
    for wrong in (['a.py'], ['a.py', 'b.py', 'c.py'], ['a.py', 'b.py', '--model', 'mask'],
                  ['--iters', '0']):
        with pytest.raises(SystemExit):
            tool.parse_args(wrong)


def test_batches_go_through_the_loader_again(tool):
    assert list(tool.batches([1, 2, 3], 7)) == [1, 2, 3, 1, 2, 3, 1]
    assert list(tool.batches([1, 2, 3], 2)) == [1, 2]
