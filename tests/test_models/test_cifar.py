"""mmgc's CIFAR backbones (``mmgc/models/cifar.py``): ResNeXt-29 4x64d and DenseNet-121 as the
GC paper trained them on CIFAR-100 (Table 1), checked by shape, size, depth, initialization and
by building them through mmpretrain's registry by their bare names."""
import subprocess
import sys

import pytest
import torch
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import init_default_scope
from torch import nn

import mmgc
from mmgc.models import DenseNetCIFAR, ResNeXtCIFAR
from mmgc.models.cifar import DenseLayer, Transition


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """DenseNet's many small ops: two threads spin against each other (and anything else
    running) far more than they help on two cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def count(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope='module')
def resnext29():
    torch.manual_seed(0)
    return ResNeXtCIFAR()


@pytest.fixture(scope='module')
def densenet121():
    torch.manual_seed(0)
    return DenseNetCIFAR()


# ---------------------------------------------------------------------------------- ResNeXt-29


def test_resnext29_4x64d_architecture(resnext29):
    model = resnext29
    assert (model.depth, model.cardinality, model.blocks_per_stage) == (29, 4, 3)
    # 3x3 stem conv of 64 channels, stride 1
    stem = model.stem[0]
    assert (stem.in_channels, stem.out_channels, stem.kernel_size, stem.stride) == (
        3, 64, (3, 3), (1, 1))
    assert count(model, nn.MaxPool2d) == 0
    # three stages of three blocks; 3x3 convs of 4 groups x 64 / 128 / 256 channels
    stages = list(model.stages)
    assert [len(s) for s in stages] == [3, 3, 3]
    widths, outputs, strides = [], [], []
    for stage in stages:
        block = stage[0]
        grouped = block.grouped[0]
        assert grouped.groups == 4 and grouped.kernel_size == (3, 3)
        widths.append(grouped.out_channels)
        outputs.append(block.expand[0].out_channels)
        strides.append(grouped.stride[0])
        for other in stage[1:]:
            assert isinstance(other.shortcut, nn.Identity)
            assert other.grouped[0].stride == (1, 1)
    assert widths == [256, 512, 1024]
    assert outputs == [512, 1024, 2048] and model.out_channels == 2048
    assert strides == [1, 2, 2]
    # 29 weighted layers: the stem, 3 convs in each of 9 blocks, (the classifier); plus one
    # 1x1 projection shortcut at the start of each stage
    assert count(model, nn.Conv2d) == 1 + 27 + 3
    assert all(not isinstance(s[0].shortcut, nn.Identity) for s in stages)
    assert count(model, nn.Linear) == 0  # the classifier is mmpretrain's head


def test_resnext29_4x64d_size(resnext29):
    # convs 27,035,328; BN 50,304 -- with a 100-class fc (2048 * 100 + 100) 27.29M
    assert num_params(resnext29) == 27_085_632
    assert 27.2e6 < num_params(resnext29) + 2048 * 100 + 100 < 27.4e6


@torch.no_grad()
def test_resnext29_output_for_cifar_images(resnext29):
    out = resnext29(torch.randn(2, 3, 32, 32))
    assert isinstance(out, tuple) and len(out) == 1
    assert out[0].shape == (2, 2048, 8, 8)


@pytest.mark.parametrize('depth', [0, 11.5, 28, 30, 2, '29', 29.0])
def test_resnext_refuses_depths_that_are_not_9n_plus_2(depth):
    with pytest.raises(ValueError, match=r'ResNeXtCIFAR: depth must be 9 \* n \+ 2'):
        ResNeXtCIFAR(depth=depth)


@torch.no_grad()
def test_resnext_other_settings():
    model = ResNeXtCIFAR(depth=11, cardinality=2, base_width=8, expansion=4, stem_channels=16)
    assert [len(s) for s in model.stages] == [1, 1, 1]
    assert model.out_channels == 4 * 2 * 8 * 4
    assert model(torch.randn(2, 3, 32, 32))[0].shape == (2, 256, 8, 8)


# -------------------------------------------------------------------------------- DenseNet-121


def test_densenet121_architecture(densenet121):
    model = densenet121
    stem = model.stem
    assert (stem.in_channels, stem.out_channels, stem.kernel_size, stem.stride) == (
        3, 64, (3, 3), (1, 1))
    assert count(model, nn.MaxPool2d) == 0
    assert tuple(model.block_sizes) == (6, 12, 24, 16)
    # 121 weighted layers: the stem, 2 convs in each of 58 dense layers, 3 transitions, (fc)
    assert count(model, nn.Conv2d) == 1 + 2 * 58 + 3
    # dense layers: BN-ReLU-1x1 conv to 4 x 32 channels, BN-ReLU-3x3 conv adding 32 (the growth)
    layers = [m for m in model.modules() if isinstance(m, DenseLayer)]
    assert len(layers) == 58
    for layer in layers:
        convs = [m for m in layer.modules() if isinstance(m, nn.Conv2d)]
        assert [(c.kernel_size, c.out_channels) for c in convs] == [((1, 1), 128), ((3, 3), 32)]
    assert [layer.layers[2].in_channels for layer in layers[:7]] == [
        64, 96, 128, 160, 192, 224, 128]
    # transitions halve the channels: 64 + 6 * 32 = 256 -> 128, 128 + 12 * 32 = 512 -> 256,
    # 256 + 24 * 32 = 1024 -> 512; then 512 + 16 * 32 = 1024 features
    transitions = [m for m in model.modules() if isinstance(m, Transition)]
    assert [(t[2].in_channels, t[2].out_channels) for t in transitions] == [
        (256, 128), (512, 256), (1024, 512)]
    assert count(model, nn.AvgPool2d) == 3
    assert model.out_channels == 1024
    assert model.final[0].num_features == 1024


def test_densenet121_size(densenet121):
    assert num_params(densenet121) == 6_946_048
    assert 7.0e6 < num_params(densenet121) + 1024 * 100 + 100 < 7.1e6


@torch.no_grad()
def test_densenet121_output_for_cifar_images(densenet121):
    out = densenet121(torch.randn(2, 3, 32, 32))
    assert isinstance(out, tuple) and len(out) == 1
    assert out[0].shape == (2, 1024, 4, 4)
    assert (out[0] >= 0).all()  # after the final BN-ReLU


def test_densenet_refuses_bad_settings():
    with pytest.raises(ValueError, match=r'depth must be one of \[121, 169, 201, 264\]'):
        DenseNetCIFAR(depth=100)
    with pytest.raises(ValueError, match='compression must be in'):
        DenseNetCIFAR(compression=0)


@torch.no_grad()
def test_densenet_other_settings():
    model = DenseNetCIFAR(depth=169, growth_rate=12, bn_size=2, compression=1.0,
                          stem_channels=16)
    assert tuple(model.block_sizes) == (6, 12, 32, 32)
    assert model.out_channels == 16 + 12 * (6 + 12 + 32 + 32)
    assert model(torch.randn(2, 3, 16, 16))[0].shape == (2, model.out_channels, 2, 2)


# ------------------------------------------------------------------- both: init, registry, GC


SMALL = {ResNeXtCIFAR: dict(depth=11, cardinality=2, base_width=16),
         DenseNetCIFAR: dict(growth_rate=8)}


@pytest.mark.parametrize('cls', [ResNeXtCIFAR, DenseNetCIFAR])
def test_default_init(cls):
    torch.manual_seed(0)
    model = cls(**SMALL[cls])
    model.init_weights()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight))
            assert torch.equal(m.bias, torch.zeros_like(m.bias))
    # Kaiming normal, fan_out, ReLU: std sqrt(2 / fan_out), on the largest conv
    conv = max((m for m in model.modules() if isinstance(m, nn.Conv2d)),
               key=lambda m: m.weight.numel())
    fan_out = conv.weight.shape[0] * conv.weight[0, 0].numel()
    assert conv.weight.std().item() == pytest.approx((2 / fan_out)**0.5, rel=0.05)
    # init_cfg=None: init_weights leaves torch's own initialization as it is
    plain = cls(init_cfg=None, **SMALL[cls])
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    plain.init_weights()
    assert all(torch.equal(before[k], v) for k, v in plain.state_dict().items())


def test_registered_in_mmengine_root_registry():
    assert MMENGINE_MODELS.get('ResNeXtCIFAR') is ResNeXtCIFAR is mmgc.ResNeXtCIFAR
    assert MMENGINE_MODELS.get('DenseNetCIFAR') is DenseNetCIFAR is mmgc.DenseNetCIFAR


@pytest.mark.parametrize('backbone', [
    dict(type='ResNeXtCIFAR', depth=11, cardinality=2, base_width=4),
    dict(type='DenseNetCIFAR', growth_rate=4, bn_size=2, stem_channels=8),
])
def test_build_through_mmpretrain_by_bare_name(backbone):
    """Under the mmpretrain scope, a bare ``type`` falls back to mmengine's root registry."""
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    assert MODELS.get(backbone['type']) is getattr(mmgc, backbone['type'])
    built = MODELS.build(backbone)
    assert type(built) is getattr(mmgc, backbone['type'])
    classifier = MODELS.build(
        dict(type='ImageClassifier', backbone=backbone, neck=dict(type='GlobalAveragePooling'),
             head=dict(type='LinearClsHead', num_classes=10, in_channels=built.out_channels)))
    assert type(classifier.backbone) is type(built)
    with torch.no_grad():
        feats = classifier.extract_feat(torch.randn(2, 3, 16, 16))
    assert feats[0].shape == (2, built.out_channels)
    assert classifier.head(feats).shape == (2, 10)


def test_every_weight_gets_a_gradient():
    model = ResNeXtCIFAR(depth=11, cardinality=2, base_width=4)
    model(torch.randn(2, 3, 32, 32))[0].square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_import_mmgc_imports_neither_mmdet_nor_mmpretrain():
    code = ('import sys, mmgc, mmgc.models; '
            'print(sorted(m for m in sys.modules if m.split(".")[0] in ("mmdet", "mmpretrain", '
            '"mmcv")))')
    out = subprocess.run([sys.executable, '-W', 'ignore', '-c', code], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == '[]'


@pytest.mark.parametrize('cls, option, value', [
    (ResNeXtCIFAR, 'cardinality', 0), (ResNeXtCIFAR, 'base_width', -1),
    (ResNeXtCIFAR, 'expansion', 2.0), (ResNeXtCIFAR, 'stem_channels', True),
    (DenseNetCIFAR, 'growth_rate', 0),
    (DenseNetCIFAR, 'bn_size', 0), (DenseNetCIFAR, 'stem_channels', -3)])
def test_sizes_must_be_positive_ints(cls, option, value):
    """One line naming the backbone, the option and the value, before any layer is made (torch
    would fail later with a message about a tensor, or build layers of zero channels)."""
    with pytest.raises(ValueError) as error:
        cls(**{option: value})
    assert str(error.value) == (f'{cls.__name__}: {option} must be a positive int, '
                                f'got {value!r}')
