"""tools/analysis_tools/benchmark_sharded_gc.py: a real two-rank run on the toy model, its counts
of GC's extra communication, and its refusals."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / 'tools' / 'analysis_tools' / 'benchmark_sharded_gc.py'


def run_tool(*args):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='')
    env['PYTHONPATH'] = os.pathsep.join(p for p in (env.get('PYTHONPATH'), str(REPO)) if p)
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_toy_run_counts_gcs_communication(tmp_path):
    """FSDP1 (both forms): one all-reduce of the row sums per step, 8 bytes per row: the toy's
    conv has 5 rows and its fc 10, so 120 bytes. ZeRO, FSDP2 and DDP: none."""
    out = tmp_path / 'numbers.json'
    proc = run_tool('--model', 'tiny', '--steps', '2', '--iters', '1', '--json', out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    engines = json.loads(out.read_text())['engines']
    assert sorted(engines) == ['ddp', 'fsdp', 'fsdp-flat', 'fsdp2', 'zero']
    for name in ('fsdp', 'fsdp-flat'):
        assert (engines[name]['gc_calls'], engines[name]['gc_bytes']) == (1, 8 * (5 + 10))
        assert engines[name]['row_sum_ms'] > 0
    for name in ('ddp', 'zero', 'fsdp2'):
        assert (engines[name]['gc_calls'], engines[name]['gc_bytes']) == (0, 0)
        assert engines[name]['row_sum_ms'] == 0
    assert engines['zero']['calls'] > 0  # (ZeRO's own broadcasts are counted, for both)
    for name, numbers in engines.items():
        assert 0 < numbers['sgd_ms'] < numbers['iteration_ms'], name
        assert numbers['params'] == 5 * 27 + 5 + 20 * 10 + 10
    lines = proc.stdout.splitlines()
    assert lines[0].startswith('tiny, 2 ranks on gloo (CPU)')
    assert [line.split()[0] for line in lines[2:7]] == list(engines)


def test_refusals():
    for args in (['--steps', '0'], ['--engines', 'deepspeed'], ['--model', 'vit']):
        proc = run_tool(*args)
        assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith('benchmark_sharded_gc.py: error')
