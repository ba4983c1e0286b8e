"""tools/analysis_tools/profile_gc_step.py: its variants step, and without CUDA it says why not."""
import os
import subprocess
import sys
from pathlib import Path

import torch

import mmgc
from mmgc.ops import fused_kernels

from ..test_configs.test_demo_configs import load_tool

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / 'tools' / 'analysis_tools' / 'profile_gc_step.py'
SHAPES = REPO / 'tools' / 'analysis_tools' / 'shapes' / 'faster-rcnn_r50_fpn.json'


def test_every_variant_takes_a_step_of_its_own_kind(monkeypatch):
    """Each variant is the optimizer its name says, and the plain-path ones step with the fused
    kernels off (their results equal the kernels' within rounding)."""
    seen = []
    tool = load_tool('tools/analysis_tools/profile_gc_step.py')

    def spy(enabled):
        seen.append(enabled)
        return fused_kernels(enabled)

    monkeypatch.setattr(tool, 'fused_kernels', spy)
    expected = {'torch SGD (fused)': torch.optim.SGD, 'SGDGC (Triton)': mmgc.SGDGC,
                'SGDGC (plain path, fused)': mmgc.SGDGC,
                'torch AdamW (fused)': torch.optim.AdamW,
                'AdamWGC grad (Triton)': mmgc.AdamWGC, 'AdamWGC update (Triton)': mmgc.AdamWGC,
                'AdamWGC grad (Triton, CPU steps)': mmgc.AdamWGC}
    variants = tool.variants()
    assert sorted(variants) == sorted(expected)
    results = {}
    for name, factory in variants.items():
        params = [torch.nn.Parameter(torch.ones(4, 3, 3, 3)), torch.nn.Parameter(torch.ones(4))]
        for p in params:
            p.grad = torch.arange(p.numel(), dtype=torch.float32).reshape(p.shape) / 10
        optimizer = factory(params)
        assert type(optimizer) is expected[name]
        optimizer.step()
        results[name] = params[0].detach().clone()
    assert seen == [False]  # only the plain-path variant switched the kernels off
    with fused_kernels(True):
        torch.testing.assert_close(results['SGDGC (plain path, fused)'],
                                   results['SGDGC (Triton)'])
    assert not torch.allclose(results['SGDGC (Triton)'], results['torch SGD (fused)'])


def test_without_cuda_it_stops_with_a_reason():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='')  # no GPU, wherever the test runs
    out = subprocess.run([sys.executable, str(TOOL), '--shapes', str(SHAPES)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == 'profile_gc_step.py needs a CUDA device'
