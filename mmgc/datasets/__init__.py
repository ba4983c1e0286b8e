"""Datasets registered in mmengine's root ``DATASETS`` (so bare names resolve under any scope)."""
from .digits import DigitsDataset, load_digit_arrays, split_indices

__all__ = ['DigitsDataset', 'load_digit_arrays', 'split_indices']
