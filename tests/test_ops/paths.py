"""Runs an optimizer on the fused (mmgc/ops) or the plain path, for comparing the two."""
import torch

from mmgc.ops import fused_kernels

# SGD options that reach every branch of the fused SGD kernels (CPU and Triton).
SGD_OPTIONS = [
    dict(lr=0.05),
    dict(lr=0.05, momentum=0.9, weight_decay=1e-2),
    dict(lr=0.05, momentum=0.9, weight_decay=1e-2, nesterov=True),
    dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=1e-2, maximize=True),
    dict(lr=0.05, momentum=0.9, weight_decay=1e-2, gc_conv_only=True),
]


def random_params(seed, dtype):
    """Weights of random shapes (1-D to 4-D, some channels_last) and two larger ones."""
    gen = torch.Generator().manual_seed(seed)
    params = []
    for _ in range(10):
        ndim = int(torch.randint(1, 5, (1, ), generator=gen))
        shape = [int(s) for s in torch.randint(1, 7, (ndim, ), generator=gen)]
        t = torch.randn(shape, generator=gen, dtype=dtype) * 2 + 1
        if ndim == 4 and seed % 2:
            t = t.to(memory_format=torch.channels_last)
        params.append(torch.nn.Parameter(t))
    params.append(torch.nn.Parameter(torch.randn(64, 3, 7, 7, dtype=dtype, generator=gen)))
    params.append(torch.nn.Parameter(torch.randn(300, 1000, dtype=dtype, generator=gen)))
    return params


def run(cls, options, params, fast, steps=6, seed=0):
    """``steps`` steps of ``cls(params, **options)`` with random gradients (drawn in float32,
    so that runs in other dtypes see the same values), on the fused path or the plain one."""
    gen = torch.Generator().manual_seed(seed + 1000)
    optimizer = cls(params, **options)
    with fused_kernels(fast):
        for _ in range(steps):
            for p in params:
                p.grad = torch.empty_like(p).copy_(torch.randn(p.shape, generator=gen))
            optimizer.step()
    return optimizer
