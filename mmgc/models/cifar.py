"""Backbones for 32x32 images that mmpretrain has no config for: ResNeXt-29 and DenseNet-BC.

Both keep the full 32x32 resolution after a 3x3 stem (no stride, no max-pool), as in the
CIFAR experiments of the GC paper (Table 1), and return a one-element tuple with the last
feature map, which mmpretrain's ``GlobalAveragePooling`` neck and ``LinearClsHead`` take.
They need torch and mmengine only; ``import mmgc`` registers them in mmengine's root
``MODELS``, so ``type='ResNeXtCIFAR'`` builds under the ``mmpretrain`` scope too.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch import Tensor, nn

InitCfg = Optional[Union[dict, List[dict]]]

#: Kaiming-normal convs (fan_out, ReLU), norm layers at weight 1 and bias 0.
DEFAULT_INIT: List[dict] = [
    dict(type='Kaiming', layer='Conv2d'),
    dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm']),
]


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                  groups: int = 1, relu: bool = True) -> nn.Sequential:
    """conv (no bias) -> BN -> optional ReLU."""
    layers: List[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                  padding=kernel_size // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels)
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _check_positive_ints(owner: str, **values: object) -> None:
    """Raises ``ValueError`` naming the first option that is not a positive int."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f'{owner}: {name} must be a positive int, got {value!r}')


class ResNeXtBlock(nn.Module):
    """Bottleneck with a grouped 3x3 conv: 1x1 (``width``) -> 3x3 in ``groups`` groups
    (``width``, ``stride``) -> 1x1 (``out_channels``), plus the identity or a 1x1 projection,
    then ReLU."""

    def __init__(self, in_channels: int, width: int, out_channels: int, groups: int,
                 stride: int = 1) -> None:
        super().__init__()
        self.reduce = _conv_bn_relu(in_channels, width, 1)
        self.grouped = _conv_bn_relu(width, width, 3, stride=stride, groups=groups)
        self.expand = _conv_bn_relu(width, out_channels, 1, relu=False)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = _conv_bn_relu(in_channels, out_channels, 1, stride=stride,
                                          relu=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.expand(self.grouped(self.reduce(x))) + self.shortcut(x))


@MODELS.register_module()
class ResNeXtCIFAR(BaseModule):
    """ResNeXt for CIFAR (Xie et al., CVPR 2017): a 3x3 stem conv, then three stages of
    ``(depth - 2) / 9`` grouped bottleneck blocks at strides 1, 2, 2.

    In stage ``i`` a block's 3x3 conv has ``cardinality`` groups of ``base_width * 2**i``
    channels each, and the block outputs ``expansion`` times that many channels. The defaults
    are ResNeXt-29 4x64d as the GC paper trained it (Table 1): stage widths 256 / 512 / 1024,
    outputs 512 / 1024 / 2048, 27.1M parameters without the classifier. Config::

        model = dict(
            type='ImageClassifier',
            backbone=dict(type='ResNeXtCIFAR', depth=29, cardinality=4, base_width=64),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=100, in_channels=2048,
                      loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))

    Args:
        depth: number of weighted layers, 9 * blocks per stage + 2 (29: 3 blocks per stage).
        cardinality: groups of every 3x3 conv.
        base_width: channels per group in the first stage; doubled at each stage.
        expansion: block output channels / 3x3-conv channels.
        stem_channels: output channels of the 3x3 stem conv.
        init_cfg: mmengine init config; default Kaiming convs and unit norm weights.

    ``forward`` returns ``(feature_map,)``: ``(N, expansion * cardinality * base_width * 4,
    H / 4, W / 4)``, i.e. ``(N, 2048, 8, 8)`` for 32x32 inputs with the defaults.
    """

    def __init__(self, depth: int = 29, cardinality: int = 4, base_width: int = 64,
                 expansion: int = 2, stem_channels: int = 64,
                 init_cfg: InitCfg = DEFAULT_INIT) -> None:
        super().__init__(init_cfg=init_cfg)
        _check_positive_ints('ResNeXtCIFAR', cardinality=cardinality, base_width=base_width,
                             expansion=expansion, stem_channels=stem_channels)
        if not isinstance(depth, int) or depth < 11 or (depth - 2) % 9:
            raise ValueError(f'ResNeXtCIFAR: depth must be 9 * n + 2 with n >= 1 (29, 38, ...), '
                             f'got {depth!r}')
        self.depth = depth
        self.cardinality = cardinality
        self.blocks_per_stage = (depth - 2) // 9
        self.stem = _conv_bn_relu(3, stem_channels, 3)
        channels = stem_channels
        stages = []
        for i, stride in enumerate((1, 2, 2)):
            width = cardinality * base_width * 2**i
            blocks = []
            for j in range(self.blocks_per_stage):
                blocks.append(ResNeXtBlock(channels, width, expansion * width, cardinality,
                                           stride if j == 0 else 1))
                channels = expansion * width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.out_channels = channels

    def forward(self, x: Tensor) -> Tuple[Tensor]:
        return (self.stages(self.stem(x)), )


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (``bottleneck`` channels) -> BN-ReLU-3x3 conv (``growth_rate``
    channels); its output is concatenated to its input."""

    def __init__(self, in_channels: int, growth_rate: int, bottleneck: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, bottleneck, 1, bias=False),
            nn.BatchNorm2d(bottleneck), nn.ReLU(inplace=True),
            nn.Conv2d(bottleneck, growth_rate, 3, padding=1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.layers(x)], dim=1)


class Transition(nn.Sequential):
    """BN-ReLU-1x1 conv to ``out_channels``, then 2x2 average pooling."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.AvgPool2d(2))


@MODELS.register_module()
class DenseNetCIFAR(BaseModule):
    """DenseNet-BC for CIFAR (Huang et al., CVPR 2017) with ImageNet's block counts: a 3x3
    stem conv of ``2 * growth_rate`` channels (stride 1, no max-pool), four dense blocks joined
    by transitions that compress the channels by ``compression`` and halve the resolution, and a
    final BN-ReLU. Config (DenseNet-121, as in the GC paper's Table 1)::

        model = dict(
            type='ImageClassifier',
            backbone=dict(type='DenseNetCIFAR', depth=121, growth_rate=32),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=100, in_channels=1024,
                      loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))

    Args:
        depth: 121, 169, 201 or 264 (dense layers per block: 6-12-24-16, 6-12-32-32,
            6-12-48-32, 6-12-64-48).
        growth_rate: channels each dense layer adds.
        bn_size: bottleneck width of a dense layer, in multiples of ``growth_rate``.
        compression: channel ratio kept by a transition (rounded down).
        stem_channels: channels of the stem conv; default ``2 * growth_rate``.
        init_cfg: mmengine init config; default Kaiming convs and unit norm weights.

    ``forward`` returns ``(feature_map,)``: ``(N, 1024, H / 8, W / 8)`` for DenseNet-121 with
    growth 32 (``(N, 1024, 4, 4)`` for 32x32 inputs).
    """
    arch_settings: Dict[int, Tuple[int, ...]] = {
        121: (6, 12, 24, 16),
        169: (6, 12, 32, 32),
        201: (6, 12, 48, 32),
        264: (6, 12, 64, 48),
    }

    def __init__(self, depth: int = 121, growth_rate: int = 32, bn_size: int = 4,
                 compression: float = 0.5, stem_channels: Optional[int] = None,
                 init_cfg: InitCfg = DEFAULT_INIT) -> None:
        super().__init__(init_cfg=init_cfg)
        _check_positive_ints('DenseNetCIFAR', growth_rate=growth_rate, bn_size=bn_size,
                             **({} if stem_channels is None else dict(stem_channels=stem_channels)))
        if depth not in self.arch_settings:
            raise ValueError(f'DenseNetCIFAR: depth must be one of '
                             f'{sorted(self.arch_settings)}, got {depth!r}')
        if not 0 < compression <= 1:
            raise ValueError(f'DenseNetCIFAR: compression must be in (0, 1], got {compression!r}')
        self.depth = depth
        self.block_sizes: Sequence[int] = self.arch_settings[depth]
        channels = 2 * growth_rate if stem_channels is None else stem_channels
        self.stem = nn.Conv2d(3, channels, 3, padding=1, bias=False)
        stages: List[nn.Module] = []
        for i, size in enumerate(self.block_sizes):
            layers = []
            for _ in range(size):
                layers.append(DenseLayer(channels, growth_rate, bn_size * growth_rate))
                channels += growth_rate
            stages.append(nn.Sequential(*layers))
            if i < len(self.block_sizes) - 1:
                reduced = int(math.floor(channels * compression))
                stages.append(Transition(channels, reduced))
                channels = reduced
        self.stages = nn.Sequential(*stages)
        self.final = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.out_channels = channels

    def forward(self, x: Tensor) -> Tuple[Tensor]:
        return (self.final(self.stages(self.stem(x))), )
