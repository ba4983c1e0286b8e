"""Writes the demo's ImageNet stand-in: a classification dataset of single synthetic shapes,
labelled by shape, in mmpretrain's ``CustomDataset`` folder layout (one sub-folder per class),
deterministic by seed. Nothing is downloaded.

    python tools/dataset_converters/synthetic_shapes_cls.py data/synthetic_shapes_cls

Each image holds one shape (circle, pentagon, square, star or triangle) of a random size,
rotation and place on a noisy background, as the objects of the detection data
(``synthetic_coco.py``): the same sizes in pixels at the default 64x64 (10 to 26 px radius), the
same class colours with jitter for circle, square and triangle, two more classes with their own
colours. Like ImageNet for COCO, it holds the detection classes among others, one object per
image, and it is learnt in a few CPU minutes. Classes are balanced (the same count per class in
each split)::

    data/synthetic_shapes_cls/
        train/circle/000000.png ... train/triangle/...
        val/circle/... val/triangle/...
"""
import argparse
import importlib.util
import math
from pathlib import Path

import cv2
import numpy as np

_spec = importlib.util.spec_from_file_location(
    'synthetic_coco', Path(__file__).resolve().parent / 'synthetic_coco.py')
synthetic_coco = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(synthetic_coco)

# Class -> (corners, inner radius ratio) for synthetic_coco.outline, and its RGB colour.
# Alphabetical: CustomDataset numbers the class folders in sorted order, so label i is CLASSES[i].
SHAPES = {'circle': (0, 1.0), 'pentagon': (5, 1.0), 'square': (4, 1.0), 'star': (5, 0.45),
          'triangle': (3, 1.0)}
CLASSES = tuple(sorted(SHAPES))
COLORS = dict(synthetic_coco.COLORS, pentagon=(210, 190, 50), star=(190, 70, 210))


def make_image(rng: np.random.Generator, shape: str, size: int) -> np.ndarray:
    """One (size, size, 3) uint8 BGR image with one ``shape`` on it."""
    image = synthetic_coco.noisy_background(rng, size)
    radius = float(rng.uniform(0.16, 0.4) * size)
    cx, cy = rng.uniform(radius + 1, size - radius - 1, size=2)
    corners, inner = SHAPES[shape]
    polygon = synthetic_coco.outline(corners, cx, cy, radius, float(rng.uniform(0, 2 * math.pi)),
                                     inner)
    color = np.clip(np.array(COLORS[shape]) + rng.integers(-30, 31, size=3), 0, 255)
    cv2.fillPoly(image, [np.round(polygon).astype(np.int32)], color[::-1].tolist())
    return np.clip(image, 0, 255).astype(np.uint8)


def make_split(root: Path, split: str, per_class: int, seed: int, size: int) -> None:
    """Writes ``per_class`` images of each class under ``root/split/<class>/``."""
    rng = np.random.default_rng(seed)
    for shape in CLASSES:
        (root / split / shape).mkdir(parents=True, exist_ok=True)
    for index in range(per_class * len(CLASSES)):
        shape = CLASSES[index % len(CLASSES)]
        cv2.imwrite(str(root / split / shape / f'{index:06d}.png'), make_image(rng, shape, size))


def make_dataset(root: str, train: int = 300, val: int = 60, seed: int = 0,
                 size: int = 64) -> Path:
    """Writes ``train`` and ``val`` images per class under ``root`` and returns it; the same
    arguments give the same files."""
    root_path = Path(root)
    make_split(root_path, 'train', train, seed, size)
    make_split(root_path, 'val', val, seed + 1, size)
    return root_path


def main() -> None:
    parser = argparse.ArgumentParser(description='Write the synthetic shape classification '
                                     'dataset (mmpretrain CustomDataset folders)')
    parser.add_argument('out_dir', nargs='?', default='data/synthetic_shapes_cls')
    parser.add_argument('--train', type=int, default=300, help='training images per class')
    parser.add_argument('--val', type=int, default=60, help='validation images per class')
    parser.add_argument('--size', type=int, default=64, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    root = make_dataset(args.out_dir, args.train, args.val, args.seed, args.size)
    print(f'synthetic shape classification dataset ({args.train} train, {args.val} val images '
          f'per class of {args.size}x{args.size}, classes {", ".join(CLASSES)}) written to '
          f'{root}')


if __name__ == '__main__':
    main()
