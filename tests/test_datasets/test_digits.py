"""mmgc.datasets.DigitsDataset: scikit-learn's digits, split as documented, through mmpretrain."""
import sys
from collections import Counter

import numpy as np
import pytest

from mmgc.datasets import DigitsDataset, load_digit_arrays, split_indices

CLASS_SIZES = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]   # load_digits, digits 0..9


def indices_of(dataset) -> list:
    return [dataset.get_data_info(i)['digit_index'] for i in range(len(dataset))]


def labels_of(dataset) -> Counter:
    return Counter(dataset.get_data_info(i)['gt_label'] for i in range(len(dataset)))


def test_split_sizes_disjoint_and_stratified():
    train, test, full = (DigitsDataset(split=s) for s in ('train', 'test', 'all'))
    assert (len(train), len(test), len(full)) == (1257, 540, 1797)
    train_ids, test_ids = set(indices_of(train)), set(indices_of(test))
    assert len(train_ids) == 1257 and len(test_ids) == 540
    assert not train_ids & test_ids
    assert train_ids | test_ids == set(indices_of(full)) == set(range(1797))
    assert labels_of(test) == {digit: 54 for digit in range(10)}
    assert labels_of(train) == {digit: n - 54 for digit, n in enumerate(CLASS_SIZES)}
    assert labels_of(full) == dict(enumerate(CLASS_SIZES))
    assert train.metainfo['classes'] == tuple('0123456789')


def test_split_is_deterministic_and_set_by_its_own_seed():
    assert indices_of(DigitsDataset(split='test')) == indices_of(DigitsDataset(split='test'))
    other = DigitsDataset(split='test', split_seed=1)
    assert indices_of(other) != indices_of(DigitsDataset(split='test'))
    assert labels_of(other) == {digit: 54 for digit in range(10)}
    small = DigitsDataset(split='test', test_per_class=10)
    assert len(small) == 100 and len(DigitsDataset(split='train', test_per_class=10)) == 1697
    # the documented rule, restated: one RandomState(seed), classes in order, a permutation each
    _, labels = load_digit_arrays()
    rng = np.random.RandomState(0)
    expected = sorted(int(i) for digit in range(10)
                      for i in rng.permutation(np.flatnonzero(labels == digit))[:54])
    assert indices_of(DigitsDataset(split='test')) == expected
    train, test = split_indices(labels, 54, 0)
    assert list(test) == expected and len(train) == 1257


def test_samples_are_the_digits_scaled_to_uint8():
    from sklearn.datasets import load_digits
    raw = load_digits()
    dataset = DigitsDataset(split='all')
    for i in (0, 1, 500, 1796):
        info = dataset.get_data_info(i)
        assert info['img'].dtype == np.uint8 and info['img'].shape == (8, 8)
        assert info['gt_label'] == raw.target[i]
        assert np.array_equal(info['img'], np.rint(raw.images[i] * 255 / 16).astype(np.uint8))
    images, _ = load_digit_arrays()
    assert images.min() == 0 and images.max() == 255
    # samples are copies: a pipeline that writes into one does not change the cached data
    info = dataset.get_data_info(0)
    info['img'][:] = 7
    assert not np.array_equal(dataset.get_data_info(0)['img'], info['img'])


def test_pipeline_of_mmpretrain_runs_on_it():
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import DATASETS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        dataset = DATASETS.build(dict(
            type='DigitsDataset', split='test',
            pipeline=[dict(type='Resize', scale=(32, 32)),
                      dict(type='RandomCrop', crop_size=32, padding=4),
                      dict(type='PackInputs')]))
        sample = dataset[3]
    assert isinstance(dataset, DigitsDataset)
    assert tuple(sample['inputs'].shape) == (1, 32, 32)
    assert str(sample['inputs'].dtype) == 'torch.uint8'
    assert int(sample['data_samples'].gt_label) == dataset.get_data_info(3)['gt_label']
    assert sample['data_samples'].sample_idx == 3


def test_missing_scikit_learn_is_one_clear_error(monkeypatch):
    for name in [n for n in sys.modules if n == 'sklearn' or n.startswith('sklearn.')]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, 'sklearn', None)
    load_digit_arrays.cache_clear()
    try:
        with pytest.raises(ImportError, match=r'DigitsDataset needs scikit-learn .*: '
                           r'pip install scikit-learn$'):
            DigitsDataset(split='train')
        # nothing is loaded before the data is needed
        assert len(DigitsDataset(split='train', lazy_init=True).data_list) == 0
    finally:
        load_digit_arrays.cache_clear()


@pytest.mark.parametrize('options, error, message', [
    (dict(split='val'), ValueError,
     "DigitsDataset: split must be one of 'train', 'test', 'all', got 'val'"),
    (dict(split='Train'), ValueError, "got 'Train'"),
    (dict(test_per_class=0), ValueError, r'test_per_class must be in \[1, 170\], got 0'),
    (dict(test_per_class=171), ValueError, 'got 171'),
    (dict(test_per_class=2.5), TypeError, 'test_per_class must be an int, got 2.5'),
    (dict(test_per_class=True), TypeError, 'got True'),
    (dict(split_seed=-1), ValueError, 'split_seed must be >= 0, got -1'),
    (dict(split_seed='0'), TypeError, "split_seed must be an int, got '0'"),
])
def test_bad_options_are_refused(options, error, message):
    with pytest.raises(error, match=message):
        DigitsDataset(**options)
