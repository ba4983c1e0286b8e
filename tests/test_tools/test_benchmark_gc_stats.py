"""tools/analysis_tools/benchmark_gc_stats.py: a real tiny run on the Faster R-CNN demo (GC twin),
its report, and its refusals."""
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / 'tools' / 'analysis_tools' / 'benchmark_gc_stats.py'


def run_tool(*args):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='')
    env['PYTHONPATH'] = os.pathsep.join(p for p in (env.get('PYTHONPATH'), str(REPO)) if p)
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def number(label: str, text: str) -> float:
    found = re.search(re.escape(label) + r'\s+([0-9.]+)', text)
    assert found, text
    return float(found.group(1))


def test_faster_rcnn_tiny_run(tmp_path):
    proc = run_tool('--model', 'faster', '--iters', '4', '--interval', '2', '--by-layer',
                    '--data-root', tmp_path / 'data')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    out = proc.stdout
    assert 'GCStatsHook(interval=2, by_layer=True), 2 measurements' in out
    iteration = number('median iteration', out)
    measurement = number('median measurement (step + logging)', out)
    assert 0 < measurement < iteration  # the hook's work is a part of an iteration
    per_iter = number('per iteration at this interval', out)
    assert abs(per_iter - measurement / 2) <= 0.01 + 1e-3 * measurement
    assert (tmp_path / 'data' / 'annotations' / 'instances_train.json').exists()


def test_refusals(tmp_path):
    proc = run_tool('--interval', '0', '--data-root', tmp_path / 'data')
    assert proc.returncode == 2 and '--interval and --iters must be >= 1' in proc.stderr
    assert not (tmp_path / 'data').exists()
