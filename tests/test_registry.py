"""Registration: every GC type builds by its bare name under every default scope, and by
``mmgc.`` name; an mmdet config (``_base_ = 'mmdet::...'``) resolves it too."""
import pytest
import torch.nn as nn
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope, init_default_scope

import mmgc

SCOPES = [None, 'mmengine', 'mmdet', 'mmpretrain']
OPTIMIZERS = {
    'SGDGC': dict(lr=0.1, momentum=0.9, weight_decay=1e-4),
    'SGDWGC': dict(lr=0.1, momentum=0.9, weight_decay=1e-4),
    'AdamGC': dict(lr=1e-3),
    'AdamWGC': dict(lr=1e-3, weight_decay=0.05),
    'AdagradGC': dict(lr=1e-2),
}


@pytest.fixture
def scope(request):
    name = request.param
    if name is None:
        # no default scope at all
        saved = DefaultScope._instance_dict.copy()
        DefaultScope._instance_dict.clear()
        yield None
        DefaultScope._instance_dict.update(saved)
    else:
        init_default_scope(name)
        yield name


def model():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2))


@pytest.mark.parametrize('scope', SCOPES, indirect=True)
@pytest.mark.parametrize('prefix', ['', 'mmgc.'])
@pytest.mark.parametrize('name', sorted(OPTIMIZERS))
def test_optimizers_build_under_every_scope(scope, prefix, name):
    cfg = dict(optimizer=dict(type=prefix + name, **OPTIMIZERS[name]))
    optim_wrapper = build_optim_wrapper(model(), cfg)
    assert type(optim_wrapper.optimizer) is getattr(mmgc, name)


@pytest.mark.parametrize('scope', SCOPES, indirect=True)
@pytest.mark.parametrize('prefix', ['', 'mmgc.'])
def test_wrapper_and_constructor_build_under_every_scope(scope, prefix):
    cfg = dict(type=prefix + 'GCOptimWrapper', constructor=prefix + 'GCOptimWrapperConstructor',
               optimizer=dict(type='SGD', lr=0.1), gc_loc='update',
               paramwise_cfg=dict(custom_keys={'0.': dict(use_gc=False)}))
    optim_wrapper = build_optim_wrapper(model(), cfg)
    assert type(optim_wrapper) is mmgc.GCOptimWrapper
    assert optim_wrapper.gc_defaults['gc_loc'] == 'update'


@pytest.mark.parametrize('scope', SCOPES, indirect=True)
@pytest.mark.parametrize('prefix', ['', 'mmgc.'])
def test_backbones_and_dataset_resolve_under_every_scope(scope, prefix):
    """The CIFAR backbones and the digits dataset, by bare and by ``mmgc.`` name, through the
    registries the default scope's Runner uses (mmpretrain's: its children of mmengine's)."""
    import importlib
    registry = importlib.import_module(f'{scope or "mmengine"}.registry')
    backbone = registry.MODELS.build(dict(type=prefix + 'DenseNetCIFAR'))
    assert type(backbone) is mmgc.DenseNetCIFAR
    assert registry.MODELS.get(prefix + 'ResNeXtCIFAR') is mmgc.ResNeXtCIFAR
    assert registry.DATASETS.get(prefix + 'DigitsDataset') is mmgc.DigitsDataset


def test_import_mmgc_imports_no_codebase():
    """``import mmgc`` in a fresh process loads neither mmdet, mmpretrain, mmcv nor
    scikit-learn."""
    import subprocess
    import sys
    code = ('import sys, mmgc; print(sorted(m for m in ("mmdet", "mmpretrain", "mmcv", "sklearn") '
            'if m in sys.modules))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == '[]'


def test_mmdet_config_with_custom_imports(tmp_path):
    """``_base_ = 'mmdet::...'`` injects ``_scope_='mmdet'`` into the inherited optim_wrapper."""
    path = tmp_path / 'faster_rcnn_gc.py'
    path.write_text(
        "_base_ = 'mmdet::_base_/schedules/schedule_1x.py'\n"
        "custom_imports = dict(imports=['mmgc'], allow_failed_imports=False)\n"
        "optim_wrapper = dict(optimizer=dict(type='SGDGC', lr=0.02, momentum=0.9, "
        "weight_decay=0.0001))\n")
    cfg = Config.fromfile(str(path))
    assert cfg.optim_wrapper._scope_ == 'mmdet'
    init_default_scope('mmdet')
    optim_wrapper = build_optim_wrapper(model(), cfg.optim_wrapper)
    assert type(optim_wrapper.optimizer) is mmgc.SGDGC
    assert optim_wrapper.optimizer.defaults['momentum'] == 0.9
