"""tools/analysis_tools/benchmark_optimizer.py (make bench): a short real run, table checked;
``--shapes`` (no config) and ``--dtype``."""
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / 'tools' / 'analysis_tools' / 'benchmark_optimizer.py'
SHAPES = REPO / 'tools' / 'analysis_tools' / 'shapes' / 'faster-rcnn_r50_fpn.json'
EXPECTED = ([f'torch {opt} ({impl})' for opt in ('SGD', 'AdamW')
             for impl in ('for-loop', 'foreach', 'fused')]
            + [f'SGDGC ({impl})' for impl in ('for-loop', 'foreach', 'fused')]
            + ['SGDGC (plain path, fused)', 'AdamWGC gc_loc=grad (fused)',
               'AdamWGC gc_loc=update (fused)', 'AdamWGC gc_loc=grad (plain path, fused)',
               'AdamWGC gc_loc=update (plain path, fused)', 'GCOptimWrapper(SGD fused)'])
ROW = re.compile(r'^(?P<name>\S.*?)\s+(?P<ms>\d+\.\d+)\s+(?P<ratio>\d+\.\d{3})\s+'
                 r'(?P<q1>\d+\.\d{3})-(?P<q3>\d+\.\d{3})'
                 r'(?:\s+(?P<peak>\d+\.\d)\s+(?P<held>\d+\.\d))?\s*$')


def load_tool():
    spec = importlib.util.spec_from_file_location('benchmark_optimizer', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def table():
    import contextlib
    import io
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        load_tool().main([str(REPO / 'configs/demo/faster-rcnn_r18_fpn_synthetic.py'),
                          '--warmup', '1', '--repeats', '4'])
    text = out.getvalue()
    rows = {m['name']: m for m in map(ROW.match, text.splitlines()) if m}
    return text, rows


def test_every_variant_is_timed(table):
    text, rows = table
    assert sorted(rows) == sorted(EXPECTED)
    assert 'device: cpu' in text and 'torch ' in text and 'values: ' in text
    assert 'dtype: float32' in text and 'skipped:' not in text
    assert 'plain path: ' in text


def test_ratios_are_to_the_fastest_torch_variant(table):
    _, rows = table
    for family in ('SGD', 'AdamW'):
        torch_rows = [r for name, r in rows.items() if name.startswith(f'torch {family} ')]
        fastest = min(torch_rows, key=lambda r: float(r['ms']))
        assert float(fastest['ratio']) == 1.0
        for row in rows.values():
            assert float(row['ms']) > 0
            assert float(row['q1']) <= float(row['ratio']) <= float(row['q3'])


def test_gc_variants_hold_no_extra_memory(table):
    _, rows = table
    gc_rows = [r for name, r in rows.items() if not name.startswith('torch ')]
    assert len(gc_rows) == 9
    for row in gc_rows:
        assert row['held'] == '0.0'
    # The fused kernels allocate nothing during a step.
    assert rows['SGDGC (fused)']['peak'] == '0.0'
    assert rows['AdamWGC gc_loc=grad (fused)']['peak'] == '0.0'
    assert rows['AdamWGC gc_loc=update (fused)']['peak'] == '0.0'


def test_shipped_shapes_file():
    shapes = load_tool().load_shapes(str(SHAPES))
    assert len(shapes) == 156
    assert sum(math.prod(shape) for _, shape in shapes) == 41527712  # 41.5 M
    assert len({name for name, _ in shapes}) == 156


def test_shapes_and_dtype_without_a_config(tmp_path):
    """``--shapes``: no config and no mmdet; bfloat16 parameters and gradients, each variant
    timed or named as skipped."""
    shapes = tmp_path / 'shapes.json'
    shapes.write_text(json.dumps([['conv.weight', [8, 4, 3, 3]], ['conv.bias', [8]],
                                  ['fc.weight', [6, 16]], ['norm.weight', [16]]]))
    code = ('import sys, runpy; sys.argv = sys.argv[1:]; '
            'runpy.run_path(sys.argv[0], run_name="__main__"); '
            'print("mmdet imported:", any(m.split(".")[0] == "mmdet" for m in sys.modules))')
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='')
    env['PYTHONPATH'] = os.pathsep.join(p for p in (env.get('PYTHONPATH'), str(REPO)) if p)
    proc = subprocess.run([sys.executable, '-c', code, str(TOOL), '--shapes', str(shapes),
                           '--dtype', 'bfloat16', '--warmup', '1', '--repeats', '3'],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    assert f'model: {shapes} (shapes)  trainable tensors: 4  values: 0.0 M  dtype: bfloat16' in text
    assert 'mmdet imported: False' in text
    rows = {m['name']: m for m in map(ROW.match, text.splitlines()) if m}
    skipped = re.findall(r'^skipped: (.+) \(cpu, bfloat16\): \S', text, re.M)
    assert sorted(list(rows) + skipped) == sorted(EXPECTED)
    assert all(float(r['ms']) > 0 for r in rows.values())


def test_config_and_shapes_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        load_tool().parse_args(['some_config.py', '--shapes', str(SHAPES)])
    assert 'not both' in capsys.readouterr().err


def test_refusal_names_what_the_device_refuses():
    tool = load_tool()

    def refused(params):
        raise RuntimeError('not for this dtype\nsecond line')

    reason = tool.refusal(refused, 'cpu', torch.float16)
    assert reason == 'RuntimeError: not for this dtype'
    sgd = tool.variants(['sgd'], 'cpu')['SGDGC (plain path, fused)'][2]
    assert tool.refusal(sgd, 'cpu', torch.float32) is None
