"""Backbones that mmpretrain's configs cannot express: CIFAR-sized ResNeXt and DenseNet."""
from .cifar import DenseNetCIFAR, ResNeXtCIFAR

__all__ = ['ResNeXtCIFAR', 'DenseNetCIFAR']
