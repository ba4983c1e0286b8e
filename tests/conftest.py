"""Session set-up shared by every test.

Triton chooses between compiling its kernels and interpreting them when it is first imported
(its language's own functions are made one way or the other then), and an earlier test may
import it through torch (``torch._dynamo``, imported by mmdet's tools, does). Without a GPU the
Triton kernels are tested under the interpreter, so it is asked for here, before anything
imports Triton. It changes nothing else: CPU tensors still take mmgc's C++ kernels unless
``MMGC_TRITON_ON_CPU=1`` (tests/test_ops/test_triton_kernels.py sets it for its own tests).
``MMGC_TRITON_DEVICE=cuda`` (tools/analysis_tools/gpu_check.sh) compiles them for the GPU.
"""
import os

if os.environ.get('MMGC_TRITON_DEVICE', 'cpu') == 'cpu':
    os.environ.setdefault('TRITON_INTERPRET', '1')
