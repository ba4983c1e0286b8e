"""scikit-learn's handwritten digits (``load_digits``) as an mmengine dataset.

1,797 real 8x8 grey images of the digits 0-9, shipped inside scikit-learn (nothing is
downloaded). The classification demo (``tools/misc/gc_demo_cls.py``) trains on them through
mmpretrain; this module itself needs only mmengine, numpy and, when the data is first loaded,
scikit-learn.

The split is fixed and independent of any training seed: ``test_per_class`` images of each
class (54 by default, so 540 test images, 54 of each digit) are drawn by ``split_seed`` with
numpy's legacy ``RandomState`` (whose stream numpy keeps stable across versions); the other
1,257 images are the training split.

.. code-block:: python

    custom_imports = dict(imports=['mmgc', 'mmgc.datasets'], allow_failed_imports=False)
    train_dataloader = dict(dataset=dict(type='DigitsDataset', split='train',
                                         pipeline=[dict(type='PackInputs')]))
"""
from functools import lru_cache
from typing import List, Tuple

import numpy as np
from mmengine.dataset import BaseDataset
from mmengine.registry import DATASETS

NUM_CLASSES = 10
SPLITS = ('train', 'test', 'all')


@lru_cache(maxsize=1)
def load_digit_arrays() -> Tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as ``(images, labels)``: uint8 ``(N, 8, 8)`` scaled from scikit-learn's
    0-16 to 0-255, and int64 ``(N,)``. Read-only arrays, loaded once per process."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError('DigitsDataset needs scikit-learn (its load_digits data): '
                          'pip install scikit-learn') from error
    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def split_indices(labels: np.ndarray, test_per_class: int,
                  split_seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """The stratified split: ``(train, test)`` sorted index arrays, ``test_per_class`` test
    indices drawn per class (classes in order, one ``RandomState(split_seed)`` for all)."""
    rng = np.random.RandomState(split_seed)
    test = np.concatenate([
        rng.permutation(np.flatnonzero(labels == label))[:test_per_class]
        for label in range(NUM_CLASSES)
    ])
    test.sort()
    train = np.setdiff1d(np.arange(len(labels)), test)
    return train, test


def _check_options(split: str, test_per_class: int, split_seed: int) -> None:
    if split not in SPLITS:
        raise ValueError(f'DigitsDataset: split must be one of {", ".join(map(repr, SPLITS))}, '
                         f'got {split!r}')
    for name, value in (('test_per_class', test_per_class), ('split_seed', split_seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f'DigitsDataset: {name} must be an int, got {value!r}')
    if not 1 <= test_per_class <= 170:
        # the smallest class has 174 images: keep a few of each for training
        raise ValueError(f'DigitsDataset: test_per_class must be in [1, 170], '
                         f'got {test_per_class}')
    if split_seed < 0:
        raise ValueError(f'DigitsDataset: split_seed must be >= 0, got {split_seed}')


@DATASETS.register_module()
class DigitsDataset(BaseDataset):
    """scikit-learn's 8x8 handwritten digits, one split of them.

    Each sample holds ``img`` (uint8 ``(8, 8)`` grey array, 0-255) and ``gt_label`` (0-9), so an
    mmpretrain pipeline starts at its transforms (``Resize``, ``RandomCrop``, ``PackInputs``)
    without loading a file.

    Args:
        split: ``'train'`` (1,257 images by default), ``'test'`` (540) or ``'all'`` (1,797).
        test_per_class: test images of each digit; the rest of the class is for training.
        split_seed: the seed of the split (not of training).
        **kwargs: the rest of :class:`mmengine.dataset.BaseDataset`'s arguments
            (``pipeline``, ``indices``, ``test_mode``, ``lazy_init``, ...).
    """

    METAINFO = dict(classes=tuple(str(digit) for digit in range(NUM_CLASSES)))

    def __init__(self, split: str = 'train', test_per_class: int = 54, split_seed: int = 0,
                 **kwargs) -> None:
        _check_options(split, test_per_class, split_seed)
        self.split = split
        self.test_per_class = int(test_per_class)
        self.split_seed = int(split_seed)
        super().__init__(**kwargs)

    def load_data_list(self) -> List[dict]:
        images, labels = load_digit_arrays()
        train, test = split_indices(labels, self.test_per_class, self.split_seed)
        chosen = dict(train=train, test=test, all=np.arange(len(labels)))[self.split]
        return [dict(img=images[i].copy(), gt_label=int(labels[i]), digit_index=int(i))
                for i in chosen]
