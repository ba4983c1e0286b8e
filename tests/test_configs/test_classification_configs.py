"""The classification configs of the GC paper (``configs/{cifar100,imagenet,fine_grained}``).

Every ``.py`` in those folders is found by glob and checked against tables written here from the
paper (Tables 1, 2, 5 and 7; ``configs/README.md``):

- a baseline is its ``_base_`` (an mmpretrain 1.2.0 config, or the baseline it varies) plus
  exactly the changes listed in ``PARENTS``; a GC twin is ``_base_ = './<baseline>.py'`` plus
  only optimizer lines, and loads equal to its baseline except for ``optim_wrapper.optimizer``;
- the paper's settings: epochs, lr steps, batch (GPUs x images per GPU), classes, image sizes,
  the backbone's lr multiplier and pretrained weights for fine-tuning;
- each config builds its classifier (the ``Pretrained`` init dropped: nothing can be
  downloaded), and one training step runs on two tiny images (32x32 for CIFAR, 64x64
  otherwise): forward, loss and backward, then one step of the optim wrapper built from the
  config. The optimizer is checked against ``OPTIMIZERS`` (exact class, lr, momentum, weight
  decay, torch's defaults, GC options in every param group) and by its first step: every
  parameter's direction is its gradient plus the weight decay (L2 or decoupled), centralized
  per output channel exactly where the paper's GC applies (conv weights; fc weights too without
  ``gc_conv_only``). Configs whose classifiers are equal share one forward and backward (a
  cache of one model; the list is ordered so that they come one after the other).

The README's Tables 3-4 commands (``--cfg-options``) are applied to their configs too.
"""
import ast
import copy
import functools
import glob
import math
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config, DictAction
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.utils import import_modules_from_strings

import mmgc

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG_ROOT = osp.join(REPO, 'configs')
FOLDERS = ('cifar100', 'imagenet', 'fine_grained')
GC_MARK = '_gc_'

CONFIGS = sorted(
    osp.relpath(path, CONFIG_ROOT).replace(osp.sep, '/')
    for folder in FOLDERS for path in glob.glob(osp.join(CONFIG_ROOT, folder, '*.py')))
GC_TWINS = [c for c in CONFIGS if GC_MARK in osp.basename(c)]
BASELINES = [c for c in CONFIGS if GC_MARK not in osp.basename(c)]
MMGC_IMPORT = dict(imports=['mmgc'], allow_failed_imports=False)
MAX_LINES = 60  # a config is a delta on its base, never a copy of it


def baseline_of(config):
    return config.replace(GC_MARK, '_')


# --------------------------------------------------------------------------- the paper's rows

# baseline: (paper table and row, GPUs, images per GPU, classes)
ROWS = {
    'cifar100/resnet18_1xb128_cifar100.py': ('Table 1 R18', 1, 128, 100),
    'cifar100/resnet101_1xb128_cifar100.py': ('Table 1 R101', 1, 128, 100),
    'cifar100/resnext29-4x64d_1xb128_cifar100.py': ('Table 1 ResNeXt-29 4x64d', 1, 128, 100),
    'cifar100/vgg11bn_1xb128_cifar100.py': ('Table 1 VGG-11', 1, 128, 100),
    'cifar100/densenet121_1xb128_cifar100.py': ('Table 1 DenseNet-121', 1, 128, 100),
    'cifar100/resnet50_1xb128_cifar100.py': ('Table 2 SGDM', 1, 128, 100),
    'cifar100/resnet50_adam_1xb128_cifar100.py': ('Table 2 Adam', 1, 128, 100),
    'cifar100/resnet50_adagrad_1xb128_cifar100.py': ('Table 2 Adagrad', 1, 128, 100),
    'cifar100/resnet50_sgdw_1xb128_cifar100.py': ('Table 2 SGDW', 1, 128, 100),
    'cifar100/resnet50_adamw_1xb128_cifar100.py': ('Table 2 AdamW', 1, 128, 100),
    'imagenet/resnet50_4xb64_in1k.py': ('Table 5 R50 BN', 4, 64, 1000),
    'imagenet/resnet50-gn_4xb64_in1k.py': ('Table 5 R50 GN', 4, 64, 1000),
    'imagenet/resnet101_8xb32_in1k.py': ('Table 5 R101 BN', 8, 32, 1000),
    'imagenet/resnet101-gn_8xb32_in1k.py': ('Table 5 R101 GN', 8, 32, 1000),
    'fine_grained/resnet50_4xb64_cub.py': ('Table 7 CUB-200-2011', 4, 64, 200),
    'fine_grained/resnet50_4xb64_stanford-cars.py': ('Table 7 Stanford Cars', 4, 64, 196),
    'fine_grained/resnet50_4xb64_fgvc-aircraft.py': ('Table 7 FGVC Aircraft', 4, 64, 100),
    'fine_grained/resnet50_4xb64_stanford-dogs.py': ('Table 7 Stanford Dogs', 4, 64, 120),
}
# folder: (images per iteration, epochs, lr x0.1 at these epochs)
SCHEDULES = {
    'cifar100': (128, 200, [60, 120, 180]),
    'imagenet': (256, 100, [30, 60, 90]),
    'fine_grained': (256, 100, [50, 80]),
}

# What every param group of the built optimizer holds (lr: see FINE_TUNING_LR for fine_grained).
TORCH = dict(maximize=False)
SGDM_CIFAR = dict(TORCH, lr=0.1, momentum=0.9, dampening=0, nesterov=False, weight_decay=5e-4)
SGDW_CIFAR = dict(SGDM_CIFAR, weight_decay=1e-3)  # decoupled
ADAM_CIFAR = dict(TORCH, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, amsgrad=False,
                  weight_decay=5e-4)
ADAMW_CIFAR = dict(ADAM_CIFAR, weight_decay=1e-3)  # decoupled
ADAGRAD_CIFAR = dict(TORCH, lr=0.01, lr_decay=0, eps=1e-10, initial_accumulator_value=0,
                     weight_decay=5e-4)
SGDM_IN1K = dict(SGDM_CIFAR, weight_decay=1e-4)
SGDM_FINE = dict(TORCH, momentum=0.9, dampening=0, nesterov=False, weight_decay=1e-4)
FINE_TUNING_LR = dict(backbone=0.01, head=0.1)
GC_OFF = dict(use_gc=False, gc_conv_only=False)
GC_CONV = dict(use_gc=True, gc_conv_only=True, gc_loc='grad')  # the paper's CIFAR / ImageNet
GC_ALL = dict(use_gc=True, gc_conv_only=False, gc_loc='grad')  # the authors' fine-grained SGD_GC
SGD, ADAM, ADAMW, ADAGRAD = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW,
                             torch.optim.Adagrad)

# config: (exact optimizer class, what each param group holds)
OPTIMIZERS = {
    'cifar100/resnet18_1xb128_cifar100.py': (SGD, SGDM_CIFAR),
    'cifar100/resnet18_gc_1xb128_cifar100.py': (mmgc.SGDGC, dict(SGDM_CIFAR, **GC_CONV)),
    'cifar100/resnet101_1xb128_cifar100.py': (SGD, SGDM_CIFAR),
    'cifar100/resnet101_gc_1xb128_cifar100.py': (mmgc.SGDGC, dict(SGDM_CIFAR, **GC_CONV)),
    'cifar100/resnext29-4x64d_1xb128_cifar100.py': (SGD, SGDM_CIFAR),
    'cifar100/resnext29-4x64d_gc_1xb128_cifar100.py': (mmgc.SGDGC, dict(SGDM_CIFAR, **GC_CONV)),
    'cifar100/vgg11bn_1xb128_cifar100.py': (SGD, SGDM_CIFAR),
    'cifar100/vgg11bn_gc_1xb128_cifar100.py': (mmgc.SGDGC, dict(SGDM_CIFAR, **GC_CONV)),
    'cifar100/densenet121_1xb128_cifar100.py': (SGD, SGDM_CIFAR),
    'cifar100/densenet121_gc_1xb128_cifar100.py': (mmgc.SGDGC, dict(SGDM_CIFAR, **GC_CONV)),
    'cifar100/resnet50_1xb128_cifar100.py': (SGD, SGDM_CIFAR),
    'cifar100/resnet50_gc_1xb128_cifar100.py': (mmgc.SGDGC, dict(SGDM_CIFAR, **GC_CONV)),
    'cifar100/resnet50_adam_1xb128_cifar100.py': (ADAM, ADAM_CIFAR),
    'cifar100/resnet50_adam_gc_1xb128_cifar100.py': (mmgc.AdamGC, dict(ADAM_CIFAR, **GC_CONV)),
    'cifar100/resnet50_adagrad_1xb128_cifar100.py': (ADAGRAD, ADAGRAD_CIFAR),
    'cifar100/resnet50_adagrad_gc_1xb128_cifar100.py':
    (mmgc.AdagradGC, dict(ADAGRAD_CIFAR, **GC_CONV)),
    'cifar100/resnet50_sgdw_1xb128_cifar100.py': (mmgc.SGDWGC, dict(SGDW_CIFAR, **GC_OFF)),
    'cifar100/resnet50_sgdw_gc_1xb128_cifar100.py': (mmgc.SGDWGC, dict(SGDW_CIFAR, **GC_CONV)),
    'cifar100/resnet50_adamw_1xb128_cifar100.py': (ADAMW, ADAMW_CIFAR),
    'cifar100/resnet50_adamw_gc_1xb128_cifar100.py':
    (mmgc.AdamWGC, dict(ADAMW_CIFAR, **GC_CONV)),
    'imagenet/resnet50_4xb64_in1k.py': (SGD, SGDM_IN1K),
    'imagenet/resnet50_gc_4xb64_in1k.py': (mmgc.SGDGC, dict(SGDM_IN1K, **GC_CONV)),
    'imagenet/resnet50-gn_4xb64_in1k.py': (SGD, SGDM_IN1K),
    'imagenet/resnet50-gn_gc_4xb64_in1k.py': (mmgc.SGDGC, dict(SGDM_IN1K, **GC_CONV)),
    'imagenet/resnet101_8xb32_in1k.py': (SGD, SGDM_IN1K),
    'imagenet/resnet101_gc_8xb32_in1k.py': (mmgc.SGDGC, dict(SGDM_IN1K, **GC_CONV)),
    'imagenet/resnet101-gn_8xb32_in1k.py': (SGD, SGDM_IN1K),
    'imagenet/resnet101-gn_gc_8xb32_in1k.py': (mmgc.SGDGC, dict(SGDM_IN1K, **GC_CONV)),
    'fine_grained/resnet50_4xb64_cub.py': (SGD, SGDM_FINE),
    'fine_grained/resnet50_gc_4xb64_cub.py': (mmgc.SGDGC, dict(SGDM_FINE, **GC_ALL)),
    'fine_grained/resnet50_4xb64_stanford-cars.py': (SGD, SGDM_FINE),
    'fine_grained/resnet50_gc_4xb64_stanford-cars.py': (mmgc.SGDGC, dict(SGDM_FINE, **GC_ALL)),
    'fine_grained/resnet50_4xb64_fgvc-aircraft.py': (SGD, SGDM_FINE),
    'fine_grained/resnet50_gc_4xb64_fgvc-aircraft.py': (mmgc.SGDGC, dict(SGDM_FINE, **GC_ALL)),
    'fine_grained/resnet50_4xb64_stanford-dogs.py': (SGD, SGDM_FINE),
    'fine_grained/resnet50_gc_4xb64_stanford-dogs.py': (mmgc.SGDGC, dict(SGDM_FINE, **GC_ALL)),
}

# ------------------------------------------------- what each baseline changes in its _base_

CIFAR_PARTS = [
    'mmpretrain::_base_/datasets/cifar100_bs16.py',
    'mmpretrain::_base_/schedules/cifar10_bs128.py',
    'mmpretrain::_base_/default_runtime.py',
]
CIFAR_TRAINING = dict(
    train_dataloader=dict(batch_size=128),
    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4)),
    param_scheduler=dict(type='MultiStepLR', by_epoch=True, milestones=[60, 120, 180],
                         gamma=0.1))


def cifar_classifier(backbone, channels):
    return dict(
        type='ImageClassifier', backbone=backbone, neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=100, in_channels=channels,
                  loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))


def replace_optimizer(**optimizer):
    return dict(optim_wrapper=dict(optimizer=dict(_delete_=True, **optimizer)))


IN1K_SGD = dict(optim_wrapper=dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4)))
GN = dict(model=dict(backbone=dict(norm_cfg=dict(type='GN', num_groups=32, requires_grad=True))))

FINE_TRAIN_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=512, edge='short'),
    dict(type='CenterCrop', crop_size=448),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
FINE_TEST_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=512, edge='short'),
    dict(type='CenterCrop', crop_size=448),
    dict(type='PackInputs'),
]
CUB_CHANGES = dict(
    pretrained='torchvision://resnet50',
    model=dict(backbone=dict(init_cfg=dict(
        _delete_=True, type='Pretrained', checkpoint='torchvision://resnet50'))),
    train_pipeline=FINE_TRAIN_PIPELINE,
    test_pipeline=FINE_TEST_PIPELINE,
    train_dataloader=dict(batch_size=64, dataset=dict(pipeline=FINE_TRAIN_PIPELINE)),
    val_dataloader=dict(dataset=dict(pipeline=FINE_TEST_PIPELINE)),
    test_dataloader=dict(dataset=dict(pipeline=FINE_TEST_PIPELINE)),
    optim_wrapper=dict(
        optimizer=dict(_delete_=True, type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4),
        paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)})),
    param_scheduler=[dict(type='MultiStepLR', by_epoch=True, milestones=[50, 80], gamma=0.1)],
    auto_scale_lr=dict(base_batch_size=256))


def other_data(classes, train, test):
    return dict(model=dict(head=dict(num_classes=classes)),
                data_preprocessor=dict(num_classes=classes),
                train_dataloader=dict(dataset=train), val_dataloader=dict(dataset=test),
                test_dataloader=dict(dataset=test))


def dogs_split(ann_file, pipeline):
    return dict(_delete_=True, type='CustomDataset', data_root='data/stanford_dogs',
                ann_file=ann_file, data_prefix='Images', pipeline=pipeline)


# baseline: (its _base_, the changes it makes besides custom_imports)
PARENTS = {
    'cifar100/resnet18_1xb128_cifar100.py':
    (['mmpretrain::_base_/models/resnet18_cifar.py'] + CIFAR_PARTS,
     dict(model=dict(head=dict(num_classes=100)), **CIFAR_TRAINING)),
    'cifar100/resnet101_1xb128_cifar100.py':
    (['mmpretrain::_base_/models/resnet101_cifar.py'] + CIFAR_PARTS,
     dict(model=dict(head=dict(num_classes=100)), **CIFAR_TRAINING)),
    'cifar100/resnext29-4x64d_1xb128_cifar100.py':
    (CIFAR_PARTS,
     dict(model=cifar_classifier(
         dict(type='ResNeXtCIFAR', depth=29, cardinality=4, base_width=64), 2048),
          **CIFAR_TRAINING)),
    'cifar100/vgg11bn_1xb128_cifar100.py':
    (CIFAR_PARTS,
     dict(model=cifar_classifier(
         dict(type='VGG', depth=11, norm_cfg=dict(type='BN'), num_classes=-1), 512),
          **CIFAR_TRAINING)),
    'cifar100/densenet121_1xb128_cifar100.py':
    (CIFAR_PARTS,
     dict(model=cifar_classifier(
         dict(type='DenseNetCIFAR', depth=121, growth_rate=32, bn_size=4, compression=0.5),
         1024), **CIFAR_TRAINING)),
    'cifar100/resnet50_1xb128_cifar100.py':
    (['mmpretrain::_base_/models/resnet50_cifar.py'] + CIFAR_PARTS,
     dict(model=dict(head=dict(num_classes=100)), **CIFAR_TRAINING)),
    'cifar100/resnet50_adam_1xb128_cifar100.py':
    ('./resnet50_1xb128_cifar100.py', replace_optimizer(type='Adam', lr=1e-3, weight_decay=5e-4)),
    'cifar100/resnet50_adagrad_1xb128_cifar100.py':
    ('./resnet50_1xb128_cifar100.py',
     replace_optimizer(type='Adagrad', lr=0.01, weight_decay=5e-4)),
    'cifar100/resnet50_sgdw_1xb128_cifar100.py':
    ('./resnet50_1xb128_cifar100.py',
     replace_optimizer(type='SGDWGC', use_gc=False, lr=0.1, momentum=0.9, weight_decay=1e-3)),
    'cifar100/resnet50_adamw_1xb128_cifar100.py':
    ('./resnet50_1xb128_cifar100.py',
     replace_optimizer(type='AdamW', lr=1e-3, weight_decay=1e-3)),
    'imagenet/resnet50_4xb64_in1k.py':
    ('mmpretrain::resnet/resnet50_8xb32_in1k.py',
     dict(train_dataloader=dict(batch_size=64), **IN1K_SGD)),
    'imagenet/resnet101_8xb32_in1k.py': ('mmpretrain::resnet/resnet101_8xb32_in1k.py', IN1K_SGD),
    'imagenet/resnet50-gn_4xb64_in1k.py': ('./resnet50_4xb64_in1k.py', GN),
    'imagenet/resnet101-gn_8xb32_in1k.py': ('./resnet101_8xb32_in1k.py', GN),
    'fine_grained/resnet50_4xb64_cub.py': ('mmpretrain::resnet/resnet50_8xb8_cub.py', CUB_CHANGES),
    'fine_grained/resnet50_4xb64_stanford-cars.py':
    ('./resnet50_4xb64_cub.py',
     other_data(196, dict(type='StanfordCars', data_root='data/Stanford_Cars', split='train'),
                dict(type='StanfordCars', data_root='data/Stanford_Cars', split='test'))),
    'fine_grained/resnet50_4xb64_fgvc-aircraft.py':
    ('./resnet50_4xb64_cub.py',
     other_data(100,
                dict(type='FGVCAircraft', data_root='data/fgvc-aircraft-2013b', split='trainval'),
                dict(type='FGVCAircraft', data_root='data/fgvc-aircraft-2013b', split='test'))),
    'fine_grained/resnet50_4xb64_stanford-dogs.py':
    ('./resnet50_4xb64_cub.py',
     other_data(120, dogs_split('meta/train.txt', FINE_TRAIN_PIPELINE),
                dogs_split('meta/test.txt', FINE_TEST_PIPELINE))),
}


# ------------------------------------------------------------------------------------ helpers


@functools.lru_cache(maxsize=None)
def _load(path):
    return Config.fromfile(path)


def load(config):
    """The merged config (cached; a copy, free to change)."""
    return copy.deepcopy(_load(osp.join(CONFIG_ROOT, config)))


# The Table 1 baselines and the Table 2 SGDM one take the paper's CIFAR training (CIFAR_PARTS + CIFAR_TRAINING, and the
# mmgc import) from one shared file, after mmpretrain's model base where there is one; PARENTS
# gives what each must merge to.
SHARED_CIFAR = '../_base_/cifar100_paper.py'


def written_base(config):
    """The ``_base_`` a baseline's file writes."""
    base, _ = PARENTS[config]
    if isinstance(base, list) and base[-len(CIFAR_PARTS):] == CIFAR_PARTS:
        models = base[:-len(CIFAR_PARTS)]
        return models + [SHARED_CIFAR] if models else SHARED_CIFAR
    return base


def load_base(base, tmp_path):
    """An mmpretrain config, loaded the way a baseline loads it (same `mmpretrain::` handling)."""
    reference = tmp_path / 'reference.py'
    reference.write_text(f'_base_ = {base!r}\n')
    return Config.fromfile(str(reference)).to_dict()


def top_level(config):
    """The names a config file assigns, with their literal values (``None`` if not literal)."""
    with open(osp.join(CONFIG_ROOT, config)) as f:
        tree = ast.parse(f.read())
    names = {}
    for node in tree.body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, (
            f'{config}: only plain `name = value` assignments, got {ast.dump(node)[:80]}')
        try:
            value = ast.literal_eval(_dict_calls_to_literals(node.value))
        except ValueError:
            value = None
        names[node.targets[0].id] = value
    return names


def _dict_calls_to_literals(node):
    """``dict(a=1)`` -> ``{'a': 1}`` so that ``ast.literal_eval`` reads config values."""
    if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'dict' and not node.args:
        return ast.Dict(keys=[ast.Constant(k.arg) for k in node.keywords],
                        values=[_dict_calls_to_literals(k.value) for k in node.keywords])
    if isinstance(node, ast.Dict):
        return ast.Dict(keys=node.keys, values=[_dict_calls_to_literals(v) for v in node.values])
    if isinstance(node, (ast.List, ast.Tuple)):
        return type(node)(elts=[_dict_calls_to_literals(e) for e in node.elts], ctx=node.ctx)
    return node


def merge(into, changes):
    """mmengine's merge of a child into its base: dicts merge key by key unless ``_delete_``."""
    for key, value in copy.deepcopy(changes).items():
        if isinstance(value, dict) and value.pop('_delete_', False):
            into[key] = value
        elif isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value
    return into


def on_mmpretrain(base):
    """Whether a ``_base_`` (a path or a list of paths) is mmpretrain's."""
    return (base if isinstance(base, str) else base[0]).startswith('mmpretrain::')


def gpus_of(config):
    return ROWS[baseline_of(config)][1]


def train_command(config):
    if gpus_of(config) == 1:
        return f'python tools/train.py configs/{config}'
    return f'bash tools/dist_train.sh configs/{config} {gpus_of(config)}'


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """Many small ops: two threads spin against each other (and against anything else running)
    far more than they help on two cores. The model cache goes at the end of the module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    _CACHE.clear()


# ---------------------------------------------------------------- the set of configs, the files


def test_every_paper_row_has_a_baseline_and_a_gc_twin():
    assert sorted(BASELINES) == sorted(ROWS) == sorted(PARENTS)
    assert sorted(GC_TWINS) == sorted(c for c in OPTIMIZERS if GC_MARK in c)
    assert sorted(baseline_of(t) for t in GC_TWINS) == sorted(BASELINES)
    assert sorted(CONFIGS) == sorted(OPTIMIZERS)
    assert len(CONFIGS) == 2 * (5 + 5 + 4 + 4) == 36
    for twin in GC_TWINS:
        assert osp.basename(twin).count(GC_MARK) == 1


@pytest.mark.parametrize('config', CONFIGS)
def test_config_file_is_a_short_delta(config):
    with open(osp.join(CONFIG_ROOT, config)) as f:
        text = f.read()
    assert len(text.splitlines()) < MAX_LINES
    assert max(len(line) for line in text.splitlines()) <= 100
    header = text.split('_base_ =')[0]
    assert f'# Train: {train_command(config)}\n' in header
    # the paper's table and row (or column)
    table, row = ROWS[baseline_of(config)][0].split(' ', 2)[1:]
    sentence = re.sub(r'\n# ?', ' ', header)
    assert f'Table {table} ' in sentence and f'"{row}"' in sentence
    names = top_level(config)
    if config in GC_TWINS:
        # `_base_` is its baseline; the only change is the optimizer: its GC type and options
        cls, expected = OPTIMIZERS[config]
        optimizer = names['optim_wrapper']['optimizer']
        assert names == dict(_base_='./' + osp.basename(baseline_of(config)),
                             optim_wrapper=dict(optimizer=optimizer))
        assert optimizer['type'] == cls.__name__
        assert optimizer['gc_conv_only'] is expected['gc_conv_only']
        assert set(optimizer) - {'type'} <= {'use_gc', 'gc_conv_only'}
        assert all(optimizer[k] == expected[k] for k in optimizer if k != 'type')
    else:
        base = written_base(config)
        assert names['_base_'] == base
        # a baseline on mmpretrain's configs alone imports mmgc; one on another baseline or on
        # the shared CIFAR training inherits that
        entries = [base] if isinstance(base, str) else base
        assert ('custom_imports' in names) == all(on_mmpretrain(e) for e in entries)
        if 'custom_imports' in names:
            assert names['custom_imports'] == MMGC_IMPORT


def test_readme_table_lists_every_config():
    with open(osp.join(CONFIG_ROOT, 'README.md')) as f:
        readme = f.read()
    for config in CONFIGS:
        assert f'[{config}]({config})' in readme, config


def readme_cfg_options_commands():
    with open(osp.join(CONFIG_ROOT, 'README.md')) as f:
        readme = f.read()
    return re.findall(r'^python tools/train\.py configs/(\S+) --cfg-options (\S+) '
                      r'--work-dir (\S+)$', readme, flags=re.M)


def test_readme_tables_3_4_commands_cover_the_grid():
    """Table 3: wd 0 / 1e-4 / 2e-4 / 1e-3 (5e-4 is the config) with SGDM lr 0.1; Table 4: SGDM
    lr 0.05 / 0.2 and Adam lr 5e-4 / 1.5e-3 (0.1 and 1e-3 are the configs); each without and
    with GC, each into its own work dir."""
    runs = set()
    work_dirs = []
    for config, option, work_dir in readme_cfg_options_commands():
        key, value = option.split('=')
        runs.add((config, key, float(value)))
        work_dirs.append(work_dir)
    expected = set()
    for gc in ('', 'gc_'):
        sgdm = f'cifar100/resnet50_{gc}1xb128_cifar100.py'
        adam = f'cifar100/resnet50_adam_{gc}1xb128_cifar100.py'
        for wd in (0, 1e-4, 2e-4, 1e-3):
            expected.add((sgdm, 'optim_wrapper.optimizer.weight_decay', wd))
        for lr in (0.05, 0.2):
            expected.add((sgdm, 'optim_wrapper.optimizer.lr', lr))
        for lr in (5e-4, 1.5e-3):
            expected.add((adam, 'optim_wrapper.optimizer.lr', lr))
    assert runs == expected
    assert len(work_dirs) == len(set(work_dirs)) == 16


@pytest.mark.parametrize('command', readme_cfg_options_commands(), ids=lambda c: c[2])
def test_readme_cfg_options_apply(command):
    config, option, _ = command
    cfg = load(config)
    key, text = option.split('=')
    cfg.merge_from_dict({key: DictAction._parse_iterable(text)})
    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer[key.split('.')[-1]] == float(text)
    # nothing else changes: the same type, and the other value of the pair as in the config
    assert optimizer.type == load(config).optim_wrapper.optimizer.type
    other = 'lr' if key.endswith('weight_decay') else 'weight_decay'
    assert optimizer[other] == load(config).optim_wrapper.optimizer[other]


# ------------------------------------------------------------------------- the merged configs


@pytest.mark.parametrize('baseline', BASELINES)
def test_baseline_is_its_base_plus_the_paper_settings(baseline, tmp_path):
    base, changes = PARENTS[baseline]
    if on_mmpretrain(base):
        expected = load_base(base, tmp_path)
        expected['custom_imports'] = MMGC_IMPORT
    else:
        expected = load(osp.join(osp.dirname(baseline), base[2:])).to_dict()
    merge(expected, changes)
    assert load(baseline).to_dict() == expected


def test_resnet50_is_mmpretrains_cifar100_config_with_the_paper_training(tmp_path):
    """The Table 2 baseline is mmpretrain's resnet/resnet50_8xb16_cifar100.py (whose zoo number
    configs/README.md gives) with only the paper's training changed."""
    expected = load_base('mmpretrain::resnet/resnet50_8xb16_cifar100.py', tmp_path)
    expected['custom_imports'] = MMGC_IMPORT
    merge(expected, CIFAR_TRAINING)
    assert load('cifar100/resnet50_1xb128_cifar100.py').to_dict() == expected


@pytest.mark.parametrize('twin', GC_TWINS)
def test_gc_twin_differs_from_its_baseline_only_in_the_optimizer(twin):
    baseline = load(baseline_of(twin)).to_dict()
    gc = load(twin).to_dict()
    base_optimizer = baseline['optim_wrapper'].pop('optimizer')
    gc_optimizer = gc['optim_wrapper'].pop('optimizer')
    assert gc == baseline
    cls, expected = OPTIMIZERS[twin]
    assert gc_optimizer['type'] == cls.__name__
    changed = {k: v for k, v in gc_optimizer.items()
               if k != 'type' and base_optimizer.get(k) != v}
    assert changed == {k: expected[k] for k in changed} and 'gc_conv_only' in changed
    assert {k: v for k, v in base_optimizer.items() if k not in gc_optimizer} == {}


@pytest.mark.parametrize('config', CONFIGS)
def test_config_has_the_paper_settings(config):
    cfg = load(config)
    row, gpus, per_gpu, classes = ROWS[baseline_of(config)]
    folder = config.split('/')[0]
    batch, epochs, milestones = SCHEDULES[folder]
    assert cfg.custom_imports == MMGC_IMPORT
    assert import_modules_from_strings(**cfg.custom_imports) == [mmgc]
    assert cfg.default_scope == 'mmpretrain'
    # schedule
    assert cfg.train_cfg.by_epoch and cfg.train_cfg.max_epochs == epochs
    schedulers = cfg.param_scheduler if isinstance(cfg.param_scheduler, list) else [
        cfg.param_scheduler]
    assert len(schedulers) == 1
    scheduler = dict(schedulers[0])
    scheduler.pop('_scope_', None)
    assert scheduler == dict(type='MultiStepLR', by_epoch=True, milestones=milestones,
                             gamma=0.1)
    # batch: GPUs x images per GPU, and lr scaling (--auto-scale-lr) from that batch
    assert gpus * per_gpu == batch
    assert cfg.train_dataloader.batch_size == per_gpu
    assert cfg.auto_scale_lr.base_batch_size == batch
    assert cfg.optim_wrapper.get('type', 'OptimWrapper') == 'OptimWrapper'
    assert cfg.optim_wrapper.get('clip_grad') is None
    # classes
    assert cfg.model.head.num_classes == classes == cfg.data_preprocessor.num_classes
    # images and data
    train = cfg.train_dataloader.dataset
    test = cfg.test_dataloader.dataset
    assert cfg.val_dataloader.dataset == test
    if folder == 'cifar100':
        assert (train.type, train.data_root, train.split) == ('CIFAR100', 'data/cifar100', 'train')
        assert (test.type, test.split) == ('CIFAR100', 'test')
        assert train.pipeline[0] == dict(type='RandomCrop', crop_size=32, padding=4)
        assert [t.type for t in test.pipeline] == ['PackInputs']  # 32x32 as they are
    elif folder == 'imagenet':
        assert (train.type, train.split, test.split) == ('ImageNet', 'train', 'val')
        assert train.pipeline[1] == dict(type='RandomResizedCrop', scale=224)
        assert test.pipeline[1:3] == [dict(type='ResizeEdge', scale=256, edge='short'),
                                      dict(type='CenterCrop', crop_size=224)]
        norm = cfg.model.backbone.get('norm_cfg', dict(type='BN'))
        assert norm == (dict(type='GN', num_groups=32, requires_grad=True)
                        if '-gn_' in config else dict(type='BN'))
        assert cfg.model.backbone.depth == int(re.match(r'imagenet/resnet(\d+)', config)[1])
    else:
        assert train.pipeline == FINE_TRAIN_PIPELINE and test.pipeline == FINE_TEST_PIPELINE
        assert cfg.model.backbone.type == 'ResNet' and cfg.model.backbone.depth == 50
        assert cfg.model.backbone.init_cfg == dict(type='Pretrained',
                                                   checkpoint='torchvision://resnet50')
        assert cfg.optim_wrapper.optimizer.lr == FINE_TUNING_LR['head']
        # the backbone at 0.1 x the classifier's lr
        assert cfg.optim_wrapper.paramwise_cfg == dict(
            custom_keys=dict(backbone=dict(lr_mult=0.1)))
        datasets = {
            'CUB-200-2011': ('CUB', 'data/CUB_200_2011', 'train', 'test'),
            'Stanford Cars': ('StanfordCars', 'data/Stanford_Cars', 'train', 'test'),
            'FGVC Aircraft': ('FGVCAircraft', 'data/fgvc-aircraft-2013b', 'trainval', 'test'),
            'Stanford Dogs': ('CustomDataset', 'data/stanford_dogs', None, None),
        }
        kind, root, train_split, test_split = datasets[row.split(' ', 2)[2]]
        assert (train.type, train.data_root, train.get('split')) == (kind, root, train_split)
        assert (test.type, test.data_root, test.get('split')) == (kind, root, test_split)


def test_fine_tuning_starts_from_torchvision_resnet50():
    """``torchvision://resnet50`` names torchvision's ImageNet-1k (V1) weights, and their keys
    and shapes are those of mmpretrain's ResNet-50 backbone (the classifier's ``fc`` aside)."""
    import torchvision
    from mmengine.runner.checkpoint import get_torchvision_models
    from mmpretrain.registry import MODELS
    assert get_torchvision_models()['resnet50'].endswith('/resnet50-0676ba61.pth')
    init_default_scope('mmpretrain')
    backbone_cfg = load('fine_grained/resnet50_4xb64_cub.py').model.backbone
    backbone_cfg.init_cfg = None
    ours = MODELS.build(backbone_cfg).state_dict()
    theirs = torchvision.models.resnet50().state_dict()
    assert {k: v.shape for k, v in ours.items()} == {
        k: v.shape for k, v in theirs.items() if not k.startswith('fc.')}


def test_fine_grained_pipelines_give_448_crops(tmp_path):
    """The Stanford Dogs layout read by CustomDataset, and the 448 x 448 center crops of the
    short-edge-512 images, in training (with flips) and testing."""
    import mmcv
    import numpy as np
    from mmpretrain.registry import DATASETS
    init_default_scope('mmpretrain')
    root = tmp_path / 'stanford_dogs'
    rng = np.random.default_rng(0)
    lines = []
    for i, (h, w) in enumerate([(600, 500), (375, 1000)]):
        name = f'n0208{i}-breed/n0208{i}_{i}.jpg'
        mmcv.imwrite(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), str(root / 'Images' / name))
        lines.append(f'{name} {i * 119}\n')
    (root / 'meta').mkdir()
    for split in ('train', 'test'):
        (root / 'meta' / f'{split}.txt').write_text(''.join(lines))
    cfg = load('fine_grained/resnet50_4xb64_stanford-dogs.py')
    for loader in ('train_dataloader', 'test_dataloader'):
        dataset_cfg = cfg[loader].dataset
        dataset_cfg.data_root = str(root)
        dataset = DATASETS.build(dataset_cfg)
        assert len(dataset) == 2
        for i in range(2):
            sample = dataset[i]
            assert sample['inputs'].shape == (3, 448, 448)
            assert sample['data_samples'].gt_label.tolist() == [i * 119]


# ------------------------------------------------- the classifier: one training step per config

# Configs whose classifiers are equal one after the other, so that the one-model cache holds.
ORDERED = sorted(CONFIGS, key=lambda c: (baseline_of(c), c))
_CACHE = {}


def tiny_batch(config, classes):
    from mmpretrain.structures import DataSample
    size = 32 if config.startswith('cifar100/') else 64
    gen = torch.Generator().manual_seed(0)
    return dict(
        inputs=[torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=gen)
                for _ in range(2)],
        data_samples=[DataSample().set_gt_label(label) for label in (0, classes - 1)])


def forward_backward(config, cfg):
    """The classifier of ``cfg`` after one loss forward + backward on two tiny images, and a
    copy of its parameters and gradients (shared by the next configs with an equal model)."""
    from mmpretrain.registry import MODELS
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.data_preprocessor = cfg.data_preprocessor  # as mmengine's Runner does
    if model_cfg.backbone.get('init_cfg', {}).get('type') == 'Pretrained':
        model_cfg.backbone.init_cfg = None  # ImageNet weights cannot be downloaded here
    assert 'Pretrained' not in str(model_cfg)
    key = repr(model_cfg)
    if key not in _CACHE:
        _CACHE.clear()
        init_default_scope('mmpretrain')
        torch.manual_seed(0)
        model = MODELS.build(model_cfg)
        model.init_weights()
        model.train()
        data = model.data_preprocessor(tiny_batch(config, cfg.model.head.num_classes), True)
        loss, _ = model.parse_losses(model(**data, mode='loss'))
        loss.backward()
        saved = {name: (p.detach().clone(), None if p.grad is None else p.grad.clone())
                 for name, p in model.named_parameters()}
        _CACHE[key] = (model, saved, loss.item())
    model, saved, loss = _CACHE[key]
    for name, p in model.named_parameters():
        weight, grad = saved[name]
        with torch.no_grad():
            p.copy_(weight)
        p.grad = None if grad is None else grad.clone()
    return model, loss


@pytest.fixture(scope='module', params=ORDERED)
def trained_once(request):
    """One step of the config's optim wrapper on the gradients of its classifier."""
    config = request.param
    cfg = load(config)
    import_modules_from_strings(**cfg.custom_imports)
    model, loss = forward_backward(config, cfg)
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    optim_wrapper.step()
    yield dict(config=config, cfg=cfg, model=model, loss=loss, optim_wrapper=optim_wrapper,
               before=before, grads=grads)


DECOUPLED_DECAY = (mmgc.SGDWGC, torch.optim.AdamW, mmgc.AdamWGC)


def channel_means(d):
    return d.flatten(1).mean(dim=1).view(-1, *[1] * (d.dim() - 1))


def observed_direction(optimizer, param):
    """The first step's direction from the optimizer's state (squared for Adagrad)."""
    state = optimizer.state[param]
    if 'momentum_buffer' in state:  # SGD family: the buffer is the direction at the first step
        return state['momentum_buffer']
    if 'exp_avg' in state:  # Adam family: (1 - beta1) x the direction
        return state['exp_avg'] / (1 - optimizer.param_groups[0]['betas'][0])
    return state['sum']  # Adagrad: the direction squared


def test_forward_backward_gives_finite_loss_and_gradients(trained_once):
    model, grads = trained_once['model'], trained_once['grads']
    assert math.isfinite(trained_once['loss']) and trained_once['loss'] > 0
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    # mmpretrain's ResNets start their residual branches at zero (zero_init_residual): at the
    # first step only their stems and projection shortcuts get gradients
    convs = [n for n, p in model.named_parameters() if p.dim() == 4]
    assert len(convs) >= 8
    assert sum(bool(grads[n].abs().sum() > 0) for n in convs) >= 4
    assert grads['head.fc.weight'].abs().sum() > 0


def test_optimizer_type_and_hyperparameters(trained_once):
    config, model = trained_once['config'], trained_once['model']
    optimizer = trained_once['optim_wrapper'].optimizer
    cls, expected = OPTIMIZERS[config]
    assert type(optimizer) is cls  # exact: the GC classes subclass torch's
    names = {id(p): n for n, p in model.named_parameters()}
    assert sum(len(g['params']) for g in optimizer.param_groups) == len(names)
    for group in optimizer.param_groups:
        assert {k: group.get(k, 'missing') for k in expected} == expected
        if not issubclass(cls, mmgc.optim.GCOptimizer):
            assert 'use_gc' not in group
        if config.startswith('fine_grained/'):
            for p in group['params']:
                part = 'backbone' if names[id(p)].startswith('backbone.') else 'head'
                assert group['lr'] == pytest.approx(FINE_TUNING_LR[part]), names[id(p)]


def test_step_follows_the_paper_and_centralizes_only_where_it_does(trained_once):
    """Every parameter's first direction is its gradient, plus the L2 decay unless the decay is
    decoupled, centralized per output channel exactly where the paper's GC applies: conv
    weights, and fc weights too without ``gc_conv_only`` (fine-tuning). Float32 errors are
    ~1e-7 of the largest value, GC's changes ~1e-4 or more."""
    model, before, grads = trained_once['model'], trained_once['before'], trained_once['grads']
    optimizer = trained_once['optim_wrapper'].optimizer
    cls, expected = OPTIMIZERS[trained_once['config']]
    use_gc, conv_only = expected.get('use_gc', False), expected.get('gc_conv_only', False)
    assert not torch.equal(model.head.fc.weight, before['head.fc.weight'])
    matters = []  # the weights where centralizing or not is a real difference
    for name, p in model.named_parameters():
        assert torch.isfinite(p).all(), name
        raw = grads[name]
        if cls not in DECOUPLED_DECAY:
            raw = raw + expected['weight_decay'] * before[name]
        want = raw
        if p.dim() > 1:
            means = channel_means(raw)
            if means.abs().max() > 1e-4 * raw.abs().max():
                matters.append(name)
            if use_gc and (p.dim() > 3 or not conv_only):
                want = raw - means
        if cls in (ADAGRAD, mmgc.AdagradGC):
            want = want.square()
        error = (observed_direction(optimizer, p) - want).abs().max().item()
        assert error <= 2e-6 * want.abs().max().item(), (name, error)
    assert 'head.fc.weight' in matters
    assert sum(model.get_parameter(n).dim() == 4 for n in matters) >= 4


def test_norm_layers(trained_once):
    """GN configs have GroupNorm (32 groups) wherever the BN ones have BatchNorm."""
    model, config = trained_once['model'], trained_once['config']
    norms = [m for m in model.backbone.modules()
             if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm))]
    assert norms
    if '-gn_' in config:
        assert all(isinstance(m, torch.nn.GroupNorm) and m.num_groups == 32 for m in norms)
        assert len(norms) == {50: 53, 101: 104}[model.backbone.depth]
    else:
        assert all(isinstance(m, torch.nn.BatchNorm2d) for m in norms)
