"""Every Triton kernel variant compiles for a Hopper GPU (sm_90), without one.

The interpreter (test_triton_kernels.py) runs the kernels' Python, not Triton's compiler, so a
kernel it runs may still fail to compile (a type the GPU lowering refuses, an op with no float64
form). Triton compiles for a target it is given, with the ptxas it ships, and no GPU; this runs
that for each kernel in every dtype and each set of switches the launchers pass, in a process
of its own (the test session interprets Triton).
"""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

COMPILE = r'''
import itertools
import sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from mmgc.ops import gc_triton as K

assert not K.INTERPRETED
target = GPUTarget('cuda', 90, 32)
common = dict(CHUNK=K.CHUNK, HEADER=K._HEADER, WIDTH=K._WIDTH, TENSORS=256)
count = 0
for dtype in sys.argv[1:]:
    f64 = dtype == 'fp64'
    base = {'table': '*i64', 'hyper': '*fp64', 'n_tensors': 'i32', 'proto': '*' + dtype}
    variants = [(K._centralize_kernel, base, dict(DECAY=decay)) for decay in (False, True)]
    variants += [(K._sgd_kernel, base, dict(DECAY=d, MOMENTUM=m, NESTEROV=n))
                 for d, m, n in itertools.product((False, True), repeat=3) if m or not n]
    variants += [(K._adam_kernel, dict(base, step_proto='*' + step), dict(DECAY=d, UPDATE=u,
                                                                        STEP_IN_TABLE=t))
                 for d, u, t in itertools.product((False, True), repeat=3)
                 for step in (('fp32', ) if dtype != 'fp64' else ('fp32', 'fp64'))]
    for fn, signature, switches in variants:
        constants = dict(common, F64=f64, **switches)
        signature = dict(signature, **{name: 'constexpr' for name in constants})
        compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constants),
                                  target=target, options=dict(num_warps=K.num_warps(f64)))
        assert compiled.asm['cubin'], (fn.__name__, dtype, switches)
        count += 1
print('compiled', count)
'''


def test_every_kernel_variant_compiles_for_sm90(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ('TRITON_INTERPRET',
                                                            'MMGC_TRITON_ON_CPU')}
    env['TRITON_CACHE_DIR'] = str(tmp_path)  # compiled here, not taken from a cache
    # two processes (the compiles take about 1.5 s each on one core)
    runs = [subprocess.Popen([sys.executable, '-c', COMPILE, *dtypes], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for dtypes in (('fp32', 'fp64'), ('fp16', 'bf16'))]
    outputs = [run.communicate(timeout=1200) for run in runs]
    for run, (stdout, stderr) in zip(runs, outputs):
        assert run.returncode == 0, stderr[-3000:]
    # per dtype 2 centralize + 6 SGD + 8 Adam; 8 more Adam for float64 step counts
    assert [out.split() for out, _ in outputs] == [['compiled', str(2 * 16 + 8)],
                                                   ['compiled', str(2 * 16)]]
