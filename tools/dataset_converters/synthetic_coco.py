"""Writes a synthetic COCO-format instance dataset: shapes of several classes on textured
backgrounds, with clutter and occlusion, with boxes and masks (run-length encoded, as COCO's) of
what is visible, deterministic by seed. Nothing is downloaded.

    python tools/dataset_converters/synthetic_coco.py data/synthetic_coco --train 300 --val 60
    python tools/dataset_converters/synthetic_coco.py data/easy --level easy     # the first demo's
    python tools/dataset_converters/synthetic_coco.py data/x --classes 8 --scale 0.03 0.3

How hard it is (``Difficulty``): the number of classes, whether colour gives the class away,
objects per image, their scale range, how much of an object may be hidden, unlabelled clutter,
background texture and noise. ``generator.json`` in the root records the settings used.

Layout (what ``configs/_base_/datasets/synthetic_coco_instance.py`` reads)::

    data/synthetic_coco/
        annotations/instances_train.json, instances_val.json
        train/000000.png ...
        val/000000.png ...
"""
import argparse
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import cv2
import numpy as np

GENERATOR_VERSION = 2  # 1: three colour-coded classes on flat backgrounds, no occlusion

# Shapes a class can be, in the order classes are taken: (corners, inner radius ratio); 0
# corners is a circle, an inner ratio below 1 a star.
SHAPES = {'circle': (0, 1.0), 'square': (4, 1.0), 'triangle': (3, 1.0), 'pentagon': (5, 1.0),
          'star': (5, 0.45), 'cross': (4, 0.35), 'hexagon': (6, 1.0), 'octagon': (8, 1.0)}
# Hues of the first classes, for levels where colour tells the class.
COLORS = {'circle': (220, 60, 60), 'square': (60, 200, 60), 'triangle': (60, 90, 230),
          'pentagon': (220, 200, 50), 'star': (200, 70, 210), 'cross': (50, 200, 210),
          'hexagon': (240, 140, 40), 'octagon': (130, 130, 130)}


@dataclass(frozen=True)
class Difficulty:
    """The generator's knobs.

    classes: how many shape classes (the first of ``SHAPES``); color_cue: whether each class
    has its own hue (else any colour that stands out from the background); objects: fewest and
    most objects per image; scale: smallest and largest radius as a share of the image side;
    occlusion: the largest share of an object that later objects and clutter may cover (its
    mask and box are then of the visible part); clutter: unlabelled bars and blobs per image,
    half behind the objects and half in front; texture: strength of the background's stripes
    and blotches (0: flat); noise: standard deviation of the pixel noise.
    """
    classes: int = 6
    color_cue: bool = True
    objects: Tuple[int, int] = (2, 6)
    scale: Tuple[float, float] = (0.045, 0.2)
    occlusion: float = 0.35
    clutter: int = 4
    texture: float = 1.0
    noise: float = 12.0

    def __post_init__(self) -> None:
        if not 1 <= self.classes <= len(SHAPES):
            raise ValueError(f'classes must be 1 to {len(SHAPES)}, got {self.classes}')
        if not 1 <= self.objects[0] <= self.objects[1]:
            raise ValueError(f'objects must be (fewest, most) with 1 <= fewest <= most, got '
                             f'{self.objects}')
        if not 0 < self.scale[0] <= self.scale[1] <= 0.45:
            raise ValueError(f'scale must be (smallest, largest) radius shares in (0, 0.45], '
                             f'got {self.scale}')
        if not 0 <= self.occlusion < 1 or self.clutter < 0 or self.texture < 0 or self.noise < 0:
            raise ValueError('occlusion must be in [0, 1); clutter, texture and noise >= 0')

    @property
    def class_names(self) -> Tuple[str, ...]:
        return tuple(SHAPES)[:self.classes]


# 'demo' is what `make demo` trains on: hard enough that the baseline's box AP stays well
# below 1 (55.5 in the demo's 8 epochs where the first demo's data gave 82; without the colour
# cue it fell to 13.2: see README). 'easy' is the first demo's data: three classes told apart by
# colour, whole and large, on flat backgrounds.
LEVELS = {
    'demo': Difficulty(),
    'easy': Difficulty(classes=3, color_cue=True, objects=(1, 4), scale=(0.08, 0.2),
                       occlusion=0.0, clutter=0, texture=0.0, noise=8.0),
}
CLASSES = LEVELS['demo'].class_names


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


def noisy_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A (size, size, 3) float32 image: one random grey-ish colour plus Gaussian noise (the
    backbone's pretraining images, ``synthetic_shapes_cls.py``)."""
    image = np.empty((size, size, 3), dtype=np.float32)
    image[:] = rng.integers(90, 160, size=3)
    image += rng.normal(0, 8, size=image.shape)
    return image


def background(rng: np.random.Generator, size: int, level: Difficulty) -> np.ndarray:
    """A (size, size, 3) float32 image: a random grey-ish colour, stripes and blotches scaled
    by ``level.texture``, and Gaussian noise."""
    image = np.empty((size, size, 3), dtype=np.float32)
    image[:] = rng.integers(70, 180, size=3)
    if level.texture > 0:
        y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
        for _ in range(3):
            angle, period = rng.uniform(0, math.pi), rng.uniform(0.04, 0.3)
            wave = np.sin(2 * math.pi * (x * math.cos(angle) + y * math.sin(angle)) / period
                          + rng.uniform(0, 2 * math.pi))
            image += (level.texture * rng.uniform(5, 22) * wave)[..., None] * rng.uniform(
                0.5, 1.0, size=3)
        coarse = rng.normal(0, 1, size=(6, 6, 3)).astype(np.float32)
        image += level.texture * 25 * cv2.resize(coarse, (size, size),
                                                 interpolation=cv2.INTER_CUBIC)
    image += rng.normal(0, level.noise, size=image.shape)
    return image


def _colour(rng: np.random.Generator, shape: Optional[str], level: Difficulty,
            behind: np.ndarray) -> np.ndarray:
    """An object's colour (its class's hue, jittered, where colour is a cue), or any colour
    that differs enough from what it is painted on (clutter: ``shape=None``)."""
    if level.color_cue and shape is not None:
        return np.clip(np.array(COLORS[shape]) + rng.integers(-30, 31, size=3), 0, 255)
    for _ in range(20):  # any colour that differs enough from what it is painted on
        colour = rng.integers(20, 236, size=3)
        if np.abs(colour - behind).sum() > 90:
            return colour
    return 255 - behind.astype(np.int64)


def _clutter(rng: np.random.Generator, size: int) -> np.ndarray:
    """An unlabelled distractor: a long thin bar or a flat ellipse, as a polygon."""
    cx, cy = rng.uniform(0, size, size=2)
    angle = rng.uniform(0, math.pi)
    if rng.random() < 0.5:
        length, width = rng.uniform(0.15, 0.5) * size, rng.uniform(1.5, 4)
        corners = [(-length, -width), (length, -width), (length, width), (-length, width)]
    else:
        a = rng.uniform(0.04, 0.12) * size
        b = a * rng.uniform(0.2, 0.45)
        corners = [(a * math.cos(t), b * math.sin(t))
                   for t in np.linspace(0, 2 * math.pi, 20, endpoint=False)]
    c, s = math.cos(angle), math.sin(angle)
    return np.array([(cx + u * c - v * s, cy + u * s + v * c) for u, v in corners],
                    dtype=np.float32)


def _fill(size: int, polygon: np.ndarray) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.uint8)
    cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 1)
    return mask.astype(bool)


def make_image(rng: np.random.Generator, size: int,
               level: Difficulty = LEVELS['demo']) -> Tuple[np.ndarray, List[dict]]:
    """One image (H, W, 3 uint8 BGR) and its objects: class and visible mask. Objects are
    painted in turn; one that would leave an earlier object less than ``1 - level.occlusion`` of
    its pixels is placed elsewhere or left out, and so is clutter in front."""
    image = background(rng, size, level)
    owner = np.full((size, size), -1, dtype=np.int32)  # which object each pixel shows
    full_area: List[int] = []
    names: List[str] = []

    def visible_enough(after: np.ndarray) -> bool:
        return all((after == i).sum() >= (1 - level.occlusion) * full_area[i] - 1e-9
                   for i in range(len(full_area)))

    def paint(mask: np.ndarray, colour: np.ndarray, index: int) -> None:
        image[mask] = colour[::-1]
        owner[mask] = index

    front = level.clutter // 2
    for _ in range(level.clutter - front):  # behind the objects
        mask = _fill(size, _clutter(rng, size))
        paint(mask, _colour(rng, None, level, image[mask].mean(0) if mask.any()
                            else image.mean((0, 1))), -1)
    for _ in range(int(rng.integers(level.objects[0], level.objects[1] + 1))):
        for _attempt in range(20):
            shape = level.class_names[int(rng.integers(level.classes))]
            corners, inner = SHAPES[shape]
            radius = float(rng.uniform(*level.scale) * size)
            cx, cy = rng.uniform(radius + 1, size - radius - 1, size=2)
            polygon = outline(corners, cx, cy, radius, float(rng.uniform(0, 2 * math.pi)),
                              inner)
            mask = _fill(size, polygon)
            if mask.sum() < 12:
                continue
            after = owner.copy()
            after[mask] = len(full_area)
            full_area.append(int(mask.sum()))
            if visible_enough(after):
                break
            full_area.pop()
        else:
            continue
        names.append(shape)
        behind = image[mask].mean(0)
        paint(mask, _colour(rng, shape, level, behind), len(full_area) - 1)
    for _ in range(front):  # in front: kept only where every object stays visible enough
        for _attempt in range(10):
            mask = _fill(size, _clutter(rng, size))
            after = owner.copy()
            after[mask] = -1
            if visible_enough(after):
                paint(mask, _colour(rng, None, level, image[mask].mean(0) if mask.any()
                                    else image.mean((0, 1))), -1)
                break
    objects = [dict(shape=shape, mask=owner == index) for index, shape in enumerate(names)]
    return np.clip(image, 0, 255).astype(np.uint8), objects


def rle(mask: np.ndarray) -> Dict:
    """COCO's compressed run-length encoding of a boolean mask (exact, where polygons traced
    around a partly hidden shape's pixels lose a good part of a small one)."""
    from pycocotools import mask as mask_utils
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return dict(size=[int(v) for v in encoded['size']], counts=encoded['counts'].decode('ascii'))


def make_split(root: Path, split: str, count: int, seed: int, size: int,
               level: Difficulty = LEVELS['demo']) -> Dict:
    rng = np.random.default_rng(seed)
    (root / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(count):
        image, objects = make_image(rng, size, level)
        file_name = f'{index:06d}.png'
        cv2.imwrite(str(root / split / file_name), image)
        images.append(dict(id=index, file_name=file_name, height=size, width=size))
        for obj in objects:
            ys, xs = np.nonzero(obj['mask'])
            x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(
                ys.max() + 1)
            annotations.append(dict(
                id=len(annotations) + 1, image_id=index,
                category_id=level.class_names.index(obj['shape']) + 1,
                bbox=[x0, y0, x1 - x0, y1 - y0], area=float(obj['mask'].sum()),
                segmentation=rle(obj['mask']), iscrowd=0))
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(level.class_names)]
    return dict(images=images, annotations=annotations, categories=categories)


SETTINGS_FILE = 'generator.json'  # in the dataset's root: how it was written


def settings(train: int, val: int, seed: int, size: int, level: Difficulty) -> Dict:
    """What the files of a dataset depend on, as written to ``SETTINGS_FILE``."""
    return dict(generator=GENERATOR_VERSION, train=train, val=val, seed=seed, size=size,
                **{k: list(v) if isinstance(v, tuple) else v
                   for k, v in dataclasses.asdict(level).items()})


def make_dataset(root: str, train: int = 300, val: int = 60, seed: int = 0, size: int = 128,
                 level: Union[str, Difficulty] = 'demo') -> Path:
    """Writes both splits under ``root`` and returns it; the same seed and level give the same
    files. ``level``: a name of ``LEVELS`` or a :class:`Difficulty`."""
    level = LEVELS[level] if isinstance(level, str) else level
    root_path = Path(root)
    (root_path / 'annotations').mkdir(parents=True, exist_ok=True)
    for split, count, split_seed in (('train', train, seed), ('val', val, seed + 1)):
        coco = make_split(root_path, split, count, split_seed, size, level)
        with open(root_path / 'annotations' / f'instances_{split}.json', 'w') as f:
            json.dump(coco, f)
    with open(root_path / SETTINGS_FILE, 'w') as f:
        json.dump(settings(train, val, seed, size, level), f, indent=1)
    return root_path


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Write a synthetic COCO instance dataset')
    parser.add_argument('out_dir', nargs='?', default='data/synthetic_coco')
    parser.add_argument('--train', type=int, default=300, help='training images')
    parser.add_argument('--val', type=int, default=60, help='validation images')
    parser.add_argument('--size', type=int, default=128, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--level', choices=sorted(LEVELS), default='demo',
                        help='preset difficulty, changed by the options below (default: demo, '
                        'what make demo trains on)')
    knobs = parser.add_argument_group('difficulty (each overrides the level\'s value)')
    knobs.add_argument('--classes', type=int, help=f'shape classes, 1 to {len(SHAPES)}')
    knobs.add_argument('--color-cue', choices=['on', 'off'],
                       help='whether each class has its own hue')
    knobs.add_argument('--objects', type=int, nargs=2, metavar=('FEWEST', 'MOST'),
                       help='objects per image')
    knobs.add_argument('--scale', type=float, nargs=2, metavar=('SMALLEST', 'LARGEST'),
                       help='object radius as a share of the image side')
    knobs.add_argument('--occlusion', type=float,
                       help='largest share of an object that may be hidden, in [0, 1)')
    knobs.add_argument('--clutter', type=int, help='unlabelled distractors per image')
    knobs.add_argument('--texture', type=float, help='background texture strength (0: flat)')
    knobs.add_argument('--noise', type=float, help='pixel noise standard deviation')
    return parser.parse_args(argv)


def level_of(args: argparse.Namespace) -> Difficulty:
    """The preset level with the options given on the command line."""
    changes = {name: getattr(args, name) for name in
               ('classes', 'objects', 'scale', 'occlusion', 'clutter', 'texture', 'noise')
               if getattr(args, name) is not None}
    changes = {k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()}
    if args.color_cue is not None:
        changes['color_cue'] = args.color_cue == 'on'
    return dataclasses.replace(LEVELS[args.level], **changes)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    try:
        level = level_of(args)
    except ValueError as error:
        raise SystemExit(f'synthetic_coco.py: error: {error}')
    if min(args.train, args.val, args.size) < 1:
        raise SystemExit('synthetic_coco.py: error: --train, --val and --size must be >= 1')
    root = make_dataset(args.out_dir, args.train, args.val, args.seed, args.size, level)
    print(f'synthetic COCO dataset ({args.train} train, {args.val} val images of '
          f'{args.size}x{args.size}, classes {", ".join(level.class_names)}) written to {root}')


if __name__ == '__main__':
    main()
