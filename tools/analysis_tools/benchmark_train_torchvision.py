"""Times whole training iterations of torchvision's Mask R-CNN with and without GC, side by side.

Needs torch, torchvision and mmgc only (no mmdet, no mmcv, no dataset, nothing downloaded).
Builds ``torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None,
weights_backbone=None, num_classes=81)`` once, with a fixed seed, and a copy of it: the baseline
trains with ``torch.optim.SGD``, the copy with ``mmgc.SGDGC`` (lr 0.02, momentum 0.9, weight decay
1e-4 for both). Synthetic batches (random images with a few random boxes, labels and masks) are
drawn ahead of each pair; the model's transform is set to the image size, so nothing is resized.
For each batch both variants run one iteration (``zero_grad``, forward, backward, ``step``),
alternating which goes first; before each pair the GC model gets the baseline's weights (each
optimizer keeps its own state), so that forward and backward do the same work in both and only the
optimizer step differs. Reported: the median iteration and step times, the median over pairs of
GC / baseline on the same batch with its quartiles, and on CUDA the memory of each variant (its
own tensors: the other model's parameters, gradients and optimizer state are left out).

    python tools/analysis_tools/benchmark_train_torchvision.py                  # CPU, 2 x 800x1216
    python tools/analysis_tools/benchmark_train_torchvision.py --device cuda --iters 30 --fused
    python tools/analysis_tools/benchmark_train_torchvision.py --image-size 256 320 --iters 3
"""
import argparse
import copy
import os
import statistics
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torchvision
from torch import nn
from torchvision.models.detection import maskrcnn_resnet50_fpn

import mmgc

SGD = dict(lr=0.02, momentum=0.9, weight_decay=1e-4)
NUM_CLASSES = 81  # 80 COCO classes and the background
Batch = Tuple[List[torch.Tensor], List[Dict[str, torch.Tensor]]]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Time training iterations of torchvision\'s Mask R-CNN R50-FPN with '
        'torch.optim.SGD and with mmgc.SGDGC, on synthetic batches')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--images-per-batch', type=int, default=2, metavar='N',
                        help='images in each synthetic batch (default 2)')
    parser.add_argument('--image-size', type=int, nargs=2, default=[800, 1216],
                        metavar=('H', 'W'), help='height and width of the synthetic images '
                        '(default 800 1216); the model takes them at this size')
    parser.add_argument('--warmup', type=int, default=3, help='untimed pairs first (default 3)')
    parser.add_argument('--iters', type=int, default=20, help='timed pairs (default 20)')
    parser.add_argument('--fused', action='store_true',
                        help='fused=True for both optimizers (torch\'s fused SGD as the baseline)'
                        '; default: each picks its own implementation')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the initial weights and of the batches')
    args = parser.parse_args(argv)
    if args.warmup < 0 or args.iters < 1:
        parser.error('--warmup must be >= 0 and --iters >= 1')
    if args.images_per_batch < 1 or min(args.image_size) < 32:
        parser.error('--images-per-batch must be >= 1 and each --image-size side >= 32')
    return args


def build_model(height: int, width: int, seed: int) -> nn.Module:
    """Mask R-CNN R50-FPN, random weights, whose transform keeps ``height x width`` images."""
    torch.manual_seed(seed)
    return maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=NUM_CLASSES,
                                 min_size=min(height, width), max_size=max(height, width))


def make_batch(images: int, height: int, width: int, seed: int) -> Batch:
    """Random images, each with 2 to 6 objects: a box, a label and a mask filling the box."""
    gen = torch.Generator().manual_seed(seed)
    imgs, targets = [], []
    for _ in range(images):
        imgs.append(torch.rand(3, height, width, generator=gen))
        count = int(torch.randint(2, 7, (), generator=gen))
        sizes = torch.rand(count, 2, generator=gen) * 0.4 + 0.1  # 10% to 50% of each side
        corners = torch.rand(count, 2, generator=gen) * (1 - sizes)
        scale = torch.tensor([width, height], dtype=torch.float32)
        lo = (corners * scale).floor()
        hi = torch.minimum(((corners + sizes) * scale).ceil(), scale)
        boxes = torch.cat([lo, hi], dim=1)
        masks = torch.zeros(count, height, width, dtype=torch.uint8)
        for mask, (x1, y1, x2, y2) in zip(masks, boxes.long().tolist()):
            mask[y1:y2, x1:x2] = 1
        labels = torch.randint(1, NUM_CLASSES, (count,), generator=gen)
        targets.append(dict(boxes=boxes, labels=labels, masks=masks))
    return imgs, targets


def to_device(batch: Batch, device: str) -> Batch:
    """A copy of the batch on ``device`` (one per variant: neither sees the other's tensors)."""
    imgs, targets = batch
    return ([i.to(device, copy=True) for i in imgs],
            [{k: v.to(device, copy=True) for k, v in t.items()} for t in targets])


def resident_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the storages of a model's parameters, buffers and gradients and of its optimizer
    state, each storage counted once."""
    tensors = list(model.parameters()) + list(model.buffers())
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    tensors += [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    storages = {}
    for t in tensors:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


@torch.no_grad()
def copy_weights(source: nn.Module, target: nn.Module) -> None:
    for s, t in zip(source.state_dict().values(), target.state_dict().values()):
        t.copy_(s)


class Variant:
    """One model and its optimizer, and what was measured on it."""

    def __init__(self, name: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                 device: str, sync: Callable[[], None]) -> None:
        self.name, self.model, self.optimizer = name, model, optimizer
        self.device, self.sync = device, sync
        self.iteration: List[float] = []
        self.step: List[float] = []
        self.loss: List[float] = []
        self.peak: List[int] = []  # CUDA: this variant's own bytes
        self.held: List[int] = []

    @property
    def label(self) -> str:
        return f'{type(self.optimizer).__module__.split(".")[0]}.{type(self.optimizer).__name__}'

    def run(self, batch: Batch, seed: int, timed: bool, others: int) -> None:
        """One training iteration; ``others``: bytes the other variant holds (CUDA)."""
        imgs, targets = to_device(batch, self.device)
        torch.manual_seed(seed)  # the same sampling (RPN, RoI heads) for both variants
        cuda = self.device == 'cuda'
        self.sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        losses = self.model(imgs, targets)
        loss = sum(losses.values())
        loss.backward()
        self.sync()
        step_start = time.perf_counter()
        self.optimizer.step()
        self.sync()
        end = time.perf_counter()
        if timed:
            self.iteration.append(end - start)
            self.step.append(end - step_start)
            self.loss.append(loss.item())
            if cuda:
                self.peak.append(torch.cuda.max_memory_allocated() - others)
                del imgs, targets, losses, loss  # the batch is not held after the step
                self.held.append(torch.cuda.memory_allocated() - others)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no CUDA device is available')
    sync = torch.cuda.synchronize if args.device == 'cuda' else (lambda: None)
    height, width = args.image_size
    baseline_model = build_model(height, width, args.seed).to(args.device).train()
    gc_model = copy.deepcopy(baseline_model)  # the same initial weights
    kw = dict(fused=True) if args.fused else {}
    runs = [Variant('baseline', baseline_model,
                    torch.optim.SGD(baseline_model.parameters(), **SGD, **kw), args.device, sync),
            Variant('GC', gc_model, mmgc.SGDGC(gc_model.parameters(), **SGD, **kw),
                    args.device, sync)]

    load = os.getloadavg()[0]  # other processes on the CPUs make the timings noisy
    start = time.perf_counter()
    for index in range(args.warmup + args.iters):
        batch = make_batch(args.images_per_batch, height, width, args.seed * 100003 + index)
        copy_weights(baseline_model, gc_model)  # the same work in forward and backward
        order = runs if index % 2 == 0 else runs[::-1]
        for variant, other in zip(order, order[::-1]):
            others = resident_bytes(other.model, other.optimizer) if args.device == 'cuda' else 0
            variant.run(batch, args.seed + index, index >= args.warmup, others)
    seconds = time.perf_counter() - start

    base, gc = runs
    params = [p for p in baseline_model.parameters() if p.requires_grad]
    ms = {v.name: dict(iteration=statistics.median(v.iteration) * 1e3,
                       step=statistics.median(v.step) * 1e3) for v in runs}
    paired = [g / b for g, b in zip(gc.iteration, base.iteration)]
    q1, median, q3 = (statistics.quantiles(paired, n=4, method='inclusive') if len(paired) > 1
                      else paired * 3)
    device = torch.cuda.get_device_name() if args.device == 'cuda' else 'CPU'
    print(f'device: {args.device} ({device}, {torch.get_num_threads()} threads)  '
          f'torch {torch.__version__}  torchvision {torchvision.__version__}  '
          f'mmgc {mmgc.__version__}')
    print(f'model: torchvision maskrcnn_resnet50_fpn (random weights, {NUM_CLASSES} classes)  '
          f'trainable tensors: {len(params)}  values: '
          f'{sum(p.numel() for p in params) / 1e6:.1f} M')
    print(f'optimizers: torch.optim.SGD vs mmgc.SGDGC, lr {SGD["lr"]} momentum {SGD["momentum"]}'
          f' weight decay {SGD["weight_decay"]}, implementation: '
          f'{"fused" if args.fused else "default"}')
    print(f'{args.iters} interleaved pairs (same batch of {args.images_per_batch} images of '
          f'{height}x{width} and same weights, alternating order) after {args.warmup} warm-up '
          f'pairs, {seconds:.1f} s (load average {load:.1f} before, on {os.cpu_count()} CPUs); '
          'median per iteration')
    cuda = args.device == 'cuda'
    header = (f'{"variant":9s} {"optimizer":18s} {"iteration ms":>12s} {"step ms":>8s} '
              f'{"step share":>10s} {"ratio":>7s} {"loss first->last":>17s}')
    if cuda:
        header += f' {"peak MiB":>9s} {"after step MiB":>14s}'
    print(header)
    print('-' * len(header))
    mib: Dict[str, Tuple[float, float]] = {}
    for v in runs:
        m = ms[v.name]
        losses = f'{v.loss[0]:.3f}->{v.loss[-1]:.3f}'
        line = (f'{v.name:9s} {v.label:18s} {m["iteration"]:12.2f} {m["step"]:8.2f} '
                f'{m["step"] / m["iteration"]:10.1%} '
                f'{m["iteration"] / ms["baseline"]["iteration"]:7.3f} {losses:>17s}')
        if cuda:
            mib[v.name] = (statistics.median(v.peak) / 2**20, statistics.median(v.held) / 2**20)
            line += f' {mib[v.name][0]:9.1f} {mib[v.name][1]:14.1f}'
        print(line)
    print('iteration: zero_grad, forward, backward and step; ratio: median iteration over the '
          'baseline\'s')
    if cuda:
        print('peak MiB: most memory allocated during an iteration, after step MiB: memory '
              'allocated once the step is done (both without the other variant\'s tensors)')
        print(f'GC memory: peak {mib["GC"][0] - mib["baseline"][0]:+.1f} MiB, after step '
              f'{mib["GC"][1] - mib["baseline"][1]:+.1f} MiB against the baseline')
    extra = ms['GC']['step'] - ms['baseline']['step']
    print(f'GC step cost: {extra:+.2f} ms per iteration = '
          f'{extra / ms["baseline"]["iteration"]:+.2%} of a baseline iteration')
    print(f'training iteration with GC / without (median of {len(paired)} same-batch pairs): '
          f'{median:.3f}  (quartiles {q1:.3f} .. {q3:.3f}; target <= 1.005)')


if __name__ == '__main__':
    main()
