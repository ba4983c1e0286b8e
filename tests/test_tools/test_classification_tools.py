"""tools/ on an mmpretrain config: the same train.py and test.py as for mmdet's, with mmdet made
unimportable, and mmpretrain's own stock tools with nothing but ``custom_imports``.

The config is a small mmpretrain classifier (a CIFAR ResNet-18 of base width 8) trained with
``SGDGC`` (conv weights only) on a tiny image folder (mmpretrain's ``CustomDataset`` layout): two
classes, dark and bright squares, which it learns in two epochs. One training run is shared by
the tests that evaluate its checkpoint.
"""
import json
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mmgc  # noqa: F401  (torch.load(weights_only=True) of mmengine checkpoints, below)
from mmgc.utils import RunCheckError, config_package_missing, load_run_config

from .test_tools import PYTHON, TOOLS, free_port, mmpretrain_tool, run, subprocess_env

LR, BATCH, BASE_BATCH = 0.1, 4, 8

CONFIG = """
_base_ = 'mmpretrain::_base_/default_runtime.py'
custom_imports = dict(imports=['mmgc'], allow_failed_imports=False)
model = dict(
    type='ImageClassifier',
    backbone=dict(type='ResNet_CIFAR', depth=18, base_channels=8),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=2, in_channels=64,
              loss=dict(type='CrossEntropyLoss'), topk=(1, )))
data_preprocessor = dict(num_classes=2, mean=[127.5] * 3, std=[64.0] * 3, to_rgb=True)
pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
train_dataloader = dict(
    batch_size={batch}, num_workers=0, persistent_workers=False,
    dataset=dict(type='CustomDataset', data_root={root!r}, data_prefix='train',
                 pipeline=pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size={batch}, num_workers=0, persistent_workers=False,
    dataset=dict(type='CustomDataset', data_root={root!r}, data_prefix='val', pipeline=pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator
optim_wrapper = dict(optimizer=dict(type='SGDGC', lr={lr}, momentum=0.9, weight_decay=5e-4,
                                    gc_conv_only=True))
train_cfg = dict(by_epoch=True, max_epochs=2, val_interval=2)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size={base_batch})
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
randomness = dict(seed=0)
"""

BLOCKER = """import sys


class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name in {names!r} or name.split('.')[0] in {names!r}:
            raise ModuleNotFoundError(f'No module named {{name!r}}', name=name)


sys.meta_path.insert(0, Refuse())
"""


def without(tmp_path: Path, *packages: str) -> str:
    """PYTHONPATH for a process in which these packages cannot be imported (as if they were not
    installed: a meta path finder refuses them before any other finder is asked)."""
    folder = tmp_path / ('without_' + '_'.join(packages))
    folder.mkdir(exist_ok=True)
    (folder / 'sitecustomize.py').write_text(BLOCKER.format(names=list(packages)))
    return os.pathsep.join([str(folder), subprocess_env()['PYTHONPATH']])


def write_images(root: Path) -> Path:
    """8 training and 4 validation images of 32x32 per class: dark (class 'dark') or bright
    squares on noise."""
    rng = np.random.default_rng(0)
    for split, count in (('train', 8), ('val', 4)):
        for label, level in (('dark', 40), ('bright', 215)):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                image[6:26, 6:26] = level
                Image.fromarray(image).save(folder / f'{i}.png')
    return root


@pytest.fixture(scope='module')
def cls_config(tmp_path_factory):
    folder = tmp_path_factory.mktemp('cls')
    root = write_images(folder / 'data')
    path = folder / 'resnet18-w8_sgdgc_tiny.py'
    path.write_text(CONFIG.format(root=str(root), batch=BATCH, lr=LR, base_batch=BASE_BATCH))
    return path


@pytest.fixture(scope='module')
def cls_run(cls_config, tmp_path_factory):
    """train.py, with mmdet unimportable, 2 epochs, --auto-scale-lr."""
    tmp = tmp_path_factory.mktemp('cls_run')
    work_dir = tmp / 'work'
    proc = run([PYTHON, TOOLS / 'train.py', cls_config, '--work-dir', work_dir, '--auto-scale-lr'],
               PYTHONPATH=without(tmp, 'mmdet'))
    return work_dir, proc


def accuracy(text: str) -> float:
    found = re.findall(r'accuracy/top1: ([0-9.]+)', text)
    assert found, text[-3000:]
    return float(found[-1])


def test_train_py_runs_an_mmpretrain_config_without_mmdet(cls_run):
    work_dir, proc = cls_run
    checkpoint = torch.load(work_dir / 'epoch_2.pth', map_location='cpu')
    groups = checkpoint['optimizer']['param_groups']
    # SGDGC with the config's GC options, lr scaled from 8 to 4 images by --auto-scale-lr
    assert all(g['use_gc'] and g['gc_conv_only'] for g in groups)
    assert all(g['lr'] == pytest.approx(LR * BATCH / BASE_BATCH) for g in groups)
    assert 'SGDGC' in proc.stdout + proc.stderr
    # it learned the two classes
    assert accuracy(proc.stdout + proc.stderr) == 100.0


def test_test_py_evaluates_without_mmdet(cls_run, cls_config, tmp_path):
    work_dir, _ = cls_run
    out = tmp_path / 'preds.pkl'
    proc = run([PYTHON, TOOLS / 'test.py', cls_config, work_dir / 'epoch_2.pth', '--work-dir',
                tmp_path / 'test', '--out', out], PYTHONPATH=without(tmp_path, 'mmdet'))
    assert accuracy(proc.stdout + proc.stderr) == 100.0
    with open(out, 'rb') as f:
        predictions = pickle.load(f)
    assert len(predictions) == 8
    assert sorted(int(p['gt_label'][0]) for p in predictions) == [0] * 4 + [1] * 4
    assert all(int(p['pred_label'][0]) == int(p['gt_label'][0]) for p in predictions)


def test_test_py_metrics_out_and_tta(cls_run, cls_config, tmp_path):
    """--out-item metrics writes the metrics; --tta (no tta_model in the config) evaluates each
    image with its flip."""
    work_dir, _ = cls_run
    out = tmp_path / 'metrics.json'
    proc = run([PYTHON, TOOLS / 'test.py', cls_config, work_dir / 'epoch_2.pth', '--work-dir',
                tmp_path / 'test', '--out', out, '--out-item', 'metrics', '--tta'])
    assert 'AverageClsScoreTTA' in proc.stdout + proc.stderr
    assert json.loads(out.read_text()) == {'accuracy/top1': 100.0}


def test_test_py_refuses_a_non_pickle_out(cls_run, cls_config, tmp_path):
    work_dir, _ = cls_run
    proc = run([PYTHON, TOOLS / 'test.py', cls_config, work_dir / 'epoch_2.pth', '--out',
                tmp_path / 'preds.json'], check=False)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [
        f'test.py: error: --out {tmp_path}/preds.json: predictions are written as a pickle: name '
        'a .pkl or .pickle file (or add --out-item metrics)']


@pytest.mark.parametrize('tool', ['train.py', 'test.py'])
def test_without_mmpretrain_is_one_error_line(tool, cls_config, tmp_path):
    args = [cls_config] + (['epoch_1.pth'] if tool == 'test.py' else [])
    proc = run([PYTHON, TOOLS / tool, *args, '--work-dir', tmp_path / 'work'], check=False,
               PYTHONPATH=without(tmp_path, 'mmpretrain'))
    both = proc.stdout + proc.stderr
    assert proc.returncode == 2 and 'Traceback' not in both, both[-3000:]
    assert proc.stderr.strip().splitlines() == [
        f'{tool}: error: mmpretrain is not installed: pip install -e ".[classification]" in the '
        'mmgc repository (mmcv first: see README.md, "Install on a GPU cluster")']


def test_config_package_missing():
    error = ModuleNotFoundError('mmpretrain is not installed, please install mmpretrain manually')
    assert config_package_missing(error) == (
        'the config takes its _base_ from mmpretrain, which is not installed: pip install -e '
        '".[classification]" in the mmgc repository (mmcv first: see README.md, "Install on a '
        'GPU cluster")')
    assert 'pip install mmfoo' in config_package_missing(
        ModuleNotFoundError('mmfoo is not installed, please install mmfoo manually'))
    assert config_package_missing(ModuleNotFoundError("No module named 'x'")) is None
    assert config_package_missing(ValueError('mmdet is not installed')) is None


def test_load_run_config(cls_config, monkeypatch):
    """The config with --cfg-options merged and its scope; a `package::` base whose package is
    not installed is a RunCheckError (the tools' one line); other errors pass through."""
    cfg, scope = load_run_config(str(cls_config), {'train_cfg.max_epochs': 7})
    assert scope == 'mmpretrain' and cfg.train_cfg.max_epochs == 7
    from mmengine.config import Config

    def missing(path):
        raise ModuleNotFoundError('mmpretrain is not installed, please install mmpretrain '
                                  'manually')

    monkeypatch.setattr(Config, 'fromfile', missing)
    with pytest.raises(RunCheckError, match='the config takes its _base_ from mmpretrain, '
                       'which is not installed: pip install -e ".'):
        load_run_config(str(cls_config))

    def other(path):
        raise ModuleNotFoundError("No module named 'mmfoo'", name='mmfoo')

    monkeypatch.setattr(Config, 'fromfile', other)
    with pytest.raises(ModuleNotFoundError, match='mmfoo'):
        load_run_config(str(cls_config))


def test_mmpretrain_stock_tools_with_custom_imports_only(cls_config, tmp_path):
    """mmpretrain's own train.py trains the GC config (custom_imports is all it needs) and its
    own test.py evaluates the checkpoint (which torch >= 2.6 loads through mmgc)."""
    work_dir = tmp_path / 'work'
    proc = run([PYTHON, mmpretrain_tool('train.py'), cls_config, '--work-dir', work_dir])
    assert 'SGDGC' in proc.stdout + proc.stderr
    checkpoint = torch.load(work_dir / 'epoch_2.pth', map_location='cpu')
    assert all(g['gc_conv_only'] for g in checkpoint['optimizer']['param_groups'])
    proc = run([PYTHON, mmpretrain_tool('test.py'), cls_config, work_dir / 'epoch_2.pth',
                '--work-dir', tmp_path / 'test'])
    assert accuracy(proc.stdout + proc.stderr) == 100.0


def test_dist_train_and_test_on_gloo_without_mmdet(cls_config, tmp_path):
    """``dist_train.sh CONFIG 2`` and ``dist_test.sh CONFIG CKPT 2`` on an mmpretrain config, on
    gloo, mmdet unimportable: 2 ranks x 4 images per iteration, 2 iterations per epoch; the two
    ranks' test halves are gathered into the 8 predictions."""
    env = dict(PYTHONPATH=without(tmp_path, 'mmdet'), PYTHON=PYTHON)
    work_dir = tmp_path / 'dist'
    run(['bash', TOOLS / 'dist_train.sh', cls_config, 2, '--work-dir', work_dir],
        PORT=str(free_port()), **env)
    checkpoint = torch.load(work_dir / 'epoch_2.pth', map_location='cpu')
    assert checkpoint['meta']['iter'] == 4
    assert all(g['gc_conv_only'] for g in checkpoint['optimizer']['param_groups'])
    out = tmp_path / 'preds.pkl'
    proc = run(['bash', TOOLS / 'dist_test.sh', cls_config, work_dir / 'epoch_2.pth', 2,
                '--work-dir', tmp_path / 'test', '--out', out], PORT=str(free_port()), **env)
    assert "'backend': 'gloo'" in proc.stdout + proc.stderr
    with open(out, 'rb') as f:
        assert len(pickle.load(f)) == 8


def test_train_py_mmpretrain_flags(cls_config, tmp_path):
    """mmpretrain's --no-validate, --no-pin-memory and --no-persistent-workers: a training
    without evaluation, its dataloaders as the flags say (the config dump of the work dir)."""
    work_dir = tmp_path / 'work'
    proc = run([PYTHON, TOOLS / 'train.py', cls_config, '--work-dir', work_dir, '--no-validate',
                '--no-pin-memory', '--no-persistent-workers', '--cfg-options',
                'train_cfg.max_epochs=1'])
    assert 'accuracy/top1' not in proc.stdout + proc.stderr
    assert (work_dir / 'epoch_1.pth').is_file()
    from mmengine.config import Config
    dumped = Config.fromfile(str(work_dir / cls_config.name))
    assert dumped.val_dataloader is None and dumped.val_cfg is None
    assert dumped.train_dataloader.pin_memory is False
    assert dumped.train_dataloader.persistent_workers is False


def test_auto_scale_lr_without_base_batch_is_one_line(cls_config, tmp_path):
    proc = run([PYTHON, TOOLS / 'train.py', cls_config, '--work-dir', tmp_path, '--auto-scale-lr',
                '--cfg-options', 'auto_scale_lr=None'], check=False)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [
        'train.py: error: --auto-scale-lr: the config has no auto_scale_lr.base_batch_size (the '
        'batch its lr is meant for); add auto_scale_lr = dict(base_batch_size=N)']
