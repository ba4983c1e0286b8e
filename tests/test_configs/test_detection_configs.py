"""The detection configs of the GC paper (``configs/{faster_rcnn,mask_rcnn,gn,gn+ws}``).

Every ``.py`` in those folders is found by glob and checked: it loads, imports mmgc, builds its
detector (ImageNet weights cannot be downloaded, so the backbone's ``init_cfg`` is dropped), runs
one training forward + backward on one tiny image, and builds its optimizer (``SGDGC`` for a
``_gc_`` twin, ``torch.optim.SGD`` for a baseline; lr 0.02, momentum 0.9, wd 1e-4). A baseline is
its mmdet base plus mmgc and nothing else; a GC twin is its baseline with only the optimizer type
changed.
"""
import ast
import glob
import math
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.utils import import_modules_from_strings

import mmdet
import mmgc
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG_ROOT = osp.join(REPO, 'configs')
MMDET_CONFIGS = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs')
FOLDERS = ('faster_rcnn', 'mask_rcnn', 'gn', 'gn+ws')
GC_MARK = '_gc_'

CONFIGS = sorted(
    osp.relpath(path, CONFIG_ROOT).replace(osp.sep, '/')
    for folder in FOLDERS for path in glob.glob(osp.join(CONFIG_ROOT, folder, '*.py')))
GC_TWINS = [c for c in CONFIGS if GC_MARK in osp.basename(c)]
BASELINES = [c for c in CONFIGS if GC_MARK not in osp.basename(c)]

# Each baseline and the mmdet 3.3.0 config it extends (the rows of configs/README.md).
MMDET_BASES = {
    'faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py': 'faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
    'faster_rcnn/faster-rcnn_r101_fpn_1x_coco.py': 'faster_rcnn/faster-rcnn_r101_fpn_1x_coco.py',
    'faster_rcnn/faster-rcnn_x101-32x4d_fpn_1x_coco.py':
    'faster_rcnn/faster-rcnn_x101-32x4d_fpn_1x_coco.py',
    'faster_rcnn/faster-rcnn_x101-64x4d_fpn_1x_coco.py':
    'faster_rcnn/faster-rcnn_x101-64x4d_fpn_1x_coco.py',
    'mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py': 'mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
    'mask_rcnn/mask-rcnn_r101_fpn_1x_coco.py': 'mask_rcnn/mask-rcnn_r101_fpn_1x_coco.py',
    'mask_rcnn/mask-rcnn_x101-32x4d_fpn_1x_coco.py':
    'mask_rcnn/mask-rcnn_x101-32x4d_fpn_1x_coco.py',
    'mask_rcnn/mask-rcnn_x101-64x4d_fpn_1x_coco.py':
    'mask_rcnn/mask-rcnn_x101-64x4d_fpn_1x_coco.py',
    'mask_rcnn/mask-rcnn_r50_fpn_4conv1fc_1x_coco.py': 'mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
    'gn/mask-rcnn_r50_fpn_gn-all_2x_coco.py': 'gn/mask-rcnn_r50_fpn_gn-all_2x_coco.py',
    'gn/mask-rcnn_r101_fpn_gn-all_2x_coco.py': 'gn/mask-rcnn_r101_fpn_gn-all_2x_coco.py',
    'gn+ws/mask-rcnn_r50_fpn_gn-ws-all_2x_coco.py': 'gn+ws/mask-rcnn_r50_fpn_gn-ws-all_2x_coco.py',
    'gn+ws/mask-rcnn_r101_fpn_gn-ws-all_2x_coco.py':
    'gn+ws/mask-rcnn_r101_fpn_gn-ws-all_2x_coco.py',
    'gn+ws/mask-rcnn_x101-32x4d_fpn_gn-ws-all_2x_coco.py':
    'gn+ws/mask-rcnn_x101-32x4d_fpn_gn-ws-all_2x_coco.py',
    'gn+ws/faster-rcnn_r50_fpn_gn-ws-all_1x_coco.py':
    'gn+ws/faster-rcnn_r50_fpn_gn-ws-all_1x_coco.py',
    'gn+ws/faster-rcnn_r101_fpn_gn-ws-all_1x_coco.py':
    'gn+ws/faster-rcnn_r101_fpn_gn-ws-all_1x_coco.py',
}
# The only model change a baseline makes to its mmdet base.
MODEL_CHANGES = {
    'mask_rcnn/mask-rcnn_r50_fpn_4conv1fc_1x_coco.py':
    dict(roi_head=dict(bbox_head=dict(type='Shared4Conv1FCBBoxHead'))),
}
MMGC_IMPORT = dict(imports=['mmgc'], allow_failed_imports=False)
HYPERPARAMS = dict(lr=0.02, momentum=0.9, weight_decay=1e-4)
MAX_LINES = 40  # a config is a delta on its base, never a copy of it
IMAGE = (3, 64, 64)


def baseline_of(twin):
    return twin.replace(GC_MARK, '_')


def load(config):
    return Config.fromfile(osp.join(CONFIG_ROOT, config))


def top_level(config):
    """The names a config file assigns, with their literal values (``None`` if not literal)."""
    with open(osp.join(CONFIG_ROOT, config)) as f:
        tree = ast.parse(f.read())
    names = {}
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # a docstring
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, (
            f'{config}: only plain `name = value` assignments, got {ast.dump(node)[:80]}')
        name = node.targets[0].id
        try:
            names[name] = ast.literal_eval(_dict_calls_to_literals(node.value))
        except ValueError:
            names[name] = None
    return names


def _dict_calls_to_literals(node):
    """``dict(a=1)`` -> ``{'a': 1}`` so that ``ast.literal_eval`` reads config values."""
    if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'dict' and not node.args:
        return ast.Dict(keys=[ast.Constant(k.arg) for k in node.keywords],
                        values=[_dict_calls_to_literals(k.value) for k in node.keywords])
    if isinstance(node, (ast.List, ast.Tuple)):
        return type(node)(elts=[_dict_calls_to_literals(e) for e in node.elts], ctx=node.ctx)
    return node


def merge(into, changes):
    for key, value in changes.items():
        if isinstance(value, dict):
            merge(into[key], value)
        else:
            into[key] = value
    return into


# ---------------------------------------------------------------- the set of configs, the files


def test_every_paper_row_has_a_baseline_and_a_gc_twin():
    assert all(any(c.startswith(folder + '/') for c in CONFIGS) for folder in FOLDERS), CONFIGS
    assert sorted(BASELINES) == sorted(MMDET_BASES)
    assert sorted(GC_TWINS) == sorted(c.replace('_1x_', '_gc_1x_').replace('_2x_', '_gc_2x_')
                                      for c in BASELINES)
    assert len(CONFIGS) == 2 * len(MMDET_BASES) == 32


@pytest.mark.parametrize('config', CONFIGS)
def test_config_file_is_a_short_delta(config):
    with open(osp.join(CONFIG_ROOT, config)) as f:
        text = f.read()
    assert len(text.splitlines()) < MAX_LINES
    # the header says how to train it, with this very path
    assert f'bash tools/dist_train.sh configs/{config} 8' in text
    names = top_level(config)
    if config in GC_TWINS:
        # the twin inherits its baseline and changes only the optimizer's type
        assert names == dict(_base_='./' + osp.basename(baseline_of(config)),
                             optim_wrapper=dict(optimizer=dict(type='SGDGC')))
    else:
        assert set(names) <= {
            '_base_', 'custom_imports', 'model', 'optim_wrapper', 'auto_scale_lr'}
        assert names['_base_'].startswith('mmdet::')
        # `_base_` points at the mmdet config of its row (for gn+ws through a 'gn/../' detour)
        base = names['_base_'][len('mmdet::'):]
        assert osp.realpath(osp.join(MMDET_CONFIGS, base)) == osp.realpath(
            osp.join(MMDET_CONFIGS, MMDET_BASES[config]))
        assert names['custom_imports'] == MMGC_IMPORT
        assert ('model' in names) == (config in MODEL_CHANGES)
        if 'model' in names:
            assert names['model'] == MODEL_CHANGES[config]


def test_readme_table_lists_every_config():
    with open(osp.join(CONFIG_ROOT, 'README.md')) as f:
        readme = f.read()
    for config in CONFIGS:
        assert f'[{config}]({config})' in readme, config


# ------------------------------------------------------------------------- the merged configs


@pytest.mark.parametrize('config', CONFIGS)
def test_config_loads_with_paper_settings(config):
    cfg = load(config)
    assert cfg.custom_imports == MMGC_IMPORT
    assert import_modules_from_strings(**cfg.custom_imports) == [mmgc]
    assert cfg.train_dataloader.batch_size == 2  # x 8 GPUs = 16 images per iteration
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=16)
    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.type == ('SGDGC' if config in GC_TWINS else 'SGD')
    assert {k: optimizer[k] for k in HYPERPARAMS} == HYPERPARAMS
    assert cfg.optim_wrapper.type == 'OptimWrapper'


@pytest.mark.parametrize('baseline', BASELINES)
def test_baseline_is_its_mmdet_base_plus_mmgc(baseline, tmp_path):
    # the mmdet config, loaded the way the baseline loads it (same `mmdet::` scope handling)
    reference = tmp_path / 'mmdet_base.py'
    reference.write_text(f"_base_ = {top_level(baseline)['_base_']!r}\n")
    expected = Config.fromfile(str(reference)).to_dict()
    merge(expected['model'], MODEL_CHANGES.get(baseline, {}))
    got = load(baseline).to_dict()
    assert got.pop('custom_imports') == MMGC_IMPORT
    assert got == expected


@pytest.mark.parametrize('twin', GC_TWINS)
def test_gc_twin_differs_from_its_baseline_only_in_the_optimizer_type(twin):
    baseline = load(baseline_of(twin)).to_dict()
    gc = load(twin).to_dict()
    assert baseline['optim_wrapper']['optimizer'].pop('type') == 'SGD'
    assert gc['optim_wrapper']['optimizer'].pop('type') == 'SGDGC'
    assert gc == baseline


# ------------------------------------------------- the detector: one training step on one image


@pytest.fixture(scope='module', params=CONFIGS)
def trained_once(request):
    """Build the config's detector and run one ``loss`` forward + backward on a 64x64 image."""
    config = request.param
    cfg = load(config)
    import_modules_from_strings(**cfg.custom_imports)
    init_default_scope('mmdet')
    cfg.model.backbone.init_cfg = None  # ImageNet weights cannot be downloaded here
    assert 'Pretrained' not in str(cfg.model)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.train()
    with_mask = 'mask_head' in cfg.model.roi_head
    data = demo_mm_inputs(batch_size=1, image_shapes=IMAGE, num_items=[1], num_classes=80,
                          with_mask=with_mask)
    data = model.data_preprocessor(data, training=True)
    losses = model(**data, mode='loss')
    loss, _ = model.parse_losses(losses)
    loss.backward()
    yield dict(config=config, cfg=cfg, model=model, losses=losses, loss=loss, with_mask=with_mask)


def backbone_convs(model):
    return [(name, p) for name, p in model.backbone.named_parameters()
            if p.requires_grad and p.dim() == 4]


def test_forward_backward_gives_finite_loss_and_backbone_grads(trained_once):
    losses, model = trained_once['losses'], trained_once['model']
    assert ('loss_mask' in losses) == trained_once['with_mask']
    for key in ('loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox'):
        assert key in losses
    assert math.isfinite(trained_once['loss'].item()) and trained_once['loss'].item() > 0
    convs = backbone_convs(model)
    assert convs
    for name, p in convs:
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for _, p in convs)


def test_optimizer_type_hyperparams_and_step(trained_once):
    config, model = trained_once['config'], trained_once['model']
    optim_wrapper = build_optim_wrapper(model, trained_once['cfg'].optim_wrapper)
    optimizer = optim_wrapper.optimizer
    # exact type: SGDGC subclasses torch.optim.SGD
    assert type(optimizer) is (mmgc.SGDGC if config in GC_TWINS else torch.optim.SGD)
    for group in optimizer.param_groups:
        assert {k: group[k] for k in HYPERPARAMS} == HYPERPARAMS
    # one step with the gradients of the forward + backward above
    name, weight = backbone_convs(model)[-1]
    before = weight.detach().clone()
    optim_wrapper.step()
    assert torch.isfinite(weight).all() and not torch.equal(weight.detach(), before), name
    # First step: the momentum buffer is d = Phi(g + wd * w) with GC, g + wd * w without. GC
    # makes each output channel's d zero-mean, for every conv and fc weight of the detector.
    # (WS convs already get zero-mean gradients, so the baseline check uses the RPN's plain conv.)
    def channel_mean_ratio(param):
        d = optimizer.state[param]['momentum_buffer'].flatten(1)
        return (d.mean(dim=1).abs().max() / d.abs().max()).item()

    if config in GC_TWINS:
        weights = [(n, p) for n, p in model.named_parameters()
                   if p.dim() > 1 and p.grad is not None]
        assert len(weights) > 10
        for n, p in weights:
            assert channel_mean_ratio(p) < 1e-5, n
    else:
        assert channel_mean_ratio(model.rpn_head.rpn_conv.weight) > 1e-3
