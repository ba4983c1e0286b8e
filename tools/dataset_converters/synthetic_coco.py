"""Writes a synthetic COCO-format instance dataset: shapes of a few classes, with boxes and
polygon masks, deterministic by seed. Nothing is downloaded.

    python tools/dataset_converters/synthetic_coco.py data/synthetic_coco --train 300 --val 60

Layout (what ``configs/_base_/datasets/synthetic_coco_instance.py`` reads)::

    data/synthetic_coco/
        annotations/instances_train.json, instances_val.json
        train/000000.png ...
        val/000000.png ...
"""
import argparse
import json
import math
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np

CLASSES = ('circle', 'square', 'triangle')
# Each class has its own hue (with jitter) and shape: learnable in minutes on a CPU.
COLORS = {'circle': (220, 60, 60), 'square': (60, 200, 60), 'triangle': (60, 90, 230)}


def outline(corners: int, cx: float, cy: float, radius: float, angle: float = 0.0,
            inner: float = 1.0) -> np.ndarray:
    """Vertices (N, 2) of a shape around (cx, cy): a circle for ``corners=0`` (a 24-gon), else a
    regular polygon turned by ``angle``, or a star when ``inner < 1`` (every other vertex at
    ``inner * radius``)."""
    if corners == 0:
        points = [(cx + radius * math.cos(t), cy + radius * math.sin(t))
                  for t in np.linspace(0, 2 * math.pi, 24, endpoint=False)]
    elif inner == 1.0:
        points = [(cx + radius * math.cos(angle + 2 * math.pi * k / corners),
                   cy + radius * math.sin(angle + 2 * math.pi * k / corners))
                  for k in range(corners)]
    else:
        points = [(cx + r * math.cos(angle + math.pi * k / corners),
                   cy + r * math.sin(angle + math.pi * k / corners))
                  for k, r in enumerate([radius, inner * radius] * corners)]
    return np.array(points, dtype=np.float32)


def _polygon(shape: str, cx: float, cy: float, size: float, angle: float) -> np.ndarray:
    return outline({'circle': 0, 'square': 4, 'triangle': 3}[shape], cx, cy, size, angle)


def noisy_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A (size, size, 3) float32 image: one random grey-ish colour plus Gaussian noise."""
    background = rng.integers(90, 160, size=3)
    image = np.empty((size, size, 3), dtype=np.float32)
    image[:] = background
    image += rng.normal(0, 8, size=image.shape)
    return image


def _overlaps(box: Tuple[float, float, float, float], boxes: List[tuple]) -> bool:
    x0, y0, x1, y1 = box
    for a0, b0, a1, b1 in boxes:
        iw = min(x1, a1) - max(x0, a0)
        ih = min(y1, b1) - max(y0, b0)
        if iw > 0 and ih > 0 and iw * ih > 0.2 * min((x1 - x0) * (y1 - y0), (a1 - a0) * (b1 - b0)):
            return True
    return False


def make_image(rng: np.random.Generator, size: int) -> Tuple[np.ndarray, List[dict]]:
    """One image (H, W, 3 uint8 BGR) and its objects (class, polygon)."""
    image = noisy_background(rng, size)
    objects, boxes = [], []
    for _ in range(int(rng.integers(1, 5))):
        for _attempt in range(20):
            shape = CLASSES[int(rng.integers(len(CLASSES)))]
            radius = float(rng.uniform(0.08, 0.2) * size)
            cx, cy = rng.uniform(radius + 1, size - radius - 1, size=2)
            polygon = _polygon(shape, cx, cy, radius, float(rng.uniform(0, 2 * math.pi)))
            x0, y0 = polygon.min(0)
            x1, y1 = polygon.max(0)
            if not _overlaps((x0, y0, x1, y1), boxes):
                break
        else:
            continue
        boxes.append((x0, y0, x1, y1))
        color = np.clip(np.array(COLORS[shape]) + rng.integers(-30, 31, size=3), 0, 255)
        cv2.fillPoly(image, [np.round(polygon).astype(np.int32)], color[::-1].tolist())
        objects.append(dict(shape=shape, polygon=polygon))
    return np.clip(image, 0, 255).astype(np.uint8), objects


def make_split(root: Path, split: str, count: int, seed: int, size: int) -> Dict:
    rng = np.random.default_rng(seed)
    (root / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(count):
        image, objects = make_image(rng, size)
        file_name = f'{index:06d}.png'
        cv2.imwrite(str(root / split / file_name), image)
        images.append(dict(id=index, file_name=file_name, height=size, width=size))
        for obj in objects:
            polygon = obj['polygon']
            x0, y0 = polygon.min(0)
            x1, y1 = polygon.max(0)
            annotations.append(dict(
                id=len(annotations) + 1, image_id=index,
                category_id=CLASSES.index(obj['shape']) + 1,
                bbox=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                area=float(cv2.contourArea(polygon)),
                segmentation=[[float(v) for v in polygon.reshape(-1)]], iscrowd=0))
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(CLASSES)]
    return dict(images=images, annotations=annotations, categories=categories)


def make_dataset(root: str, train: int = 300, val: int = 60, seed: int = 0,
                 size: int = 128) -> Path:
    """Writes both splits under ``root`` and returns it; the same seed gives the same files."""
    root_path = Path(root)
    (root_path / 'annotations').mkdir(parents=True, exist_ok=True)
    for split, count, split_seed in (('train', train, seed), ('val', val, seed + 1)):
        coco = make_split(root_path, split, count, split_seed, size)
        with open(root_path / 'annotations' / f'instances_{split}.json', 'w') as f:
            json.dump(coco, f)
    return root_path


def main() -> None:
    parser = argparse.ArgumentParser(description='Write a synthetic COCO instance dataset')
    parser.add_argument('out_dir', nargs='?', default='data/synthetic_coco')
    parser.add_argument('--train', type=int, default=300, help='training images')
    parser.add_argument('--val', type=int, default=60, help='validation images')
    parser.add_argument('--size', type=int, default=128, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    root = make_dataset(args.out_dir, args.train, args.val, args.seed, args.size)
    print(f'synthetic COCO dataset ({args.train} train, {args.val} val images of '
          f'{args.size}x{args.size}, classes {", ".join(CLASSES)}) written to {root}')


if __name__ == '__main__':
    main()
