"""GCOptimWrapperConstructor: per-parameter-group GC options through paramwise_cfg."""
import pytest
import torch
import torch.nn as nn
from mmengine.optim import build_optim_wrapper

import mmgc  # noqa: F401  (registers the GC types)

from ..test_gc import reference_phi


class Detector(nn.Module):
    """Names as in mmdet: a backbone, a neck and an roi_head with fc layers."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.neck = nn.Conv2d(4, 4, 1)
        self.roi_head = nn.Linear(16, 3)
        self.backbone_fc = nn.Linear(4, 4)  # 'backbone' is in its name too

    def forward(self, x):
        x = self.neck(self.backbone(x))
        return self.roi_head(x.flatten(1)).sum() + self.backbone_fc(x.mean((2, 3))).sum()


def build(optimizer, paramwise_cfg=None, **wrapper):
    torch.manual_seed(0)
    model = Detector().double()
    cfg = dict(constructor='GCOptimWrapperConstructor', optimizer=optimizer, **wrapper)
    if paramwise_cfg is not None:
        cfg['paramwise_cfg'] = paramwise_cfg
    return model, build_optim_wrapper(model, cfg)


def one_step(model, optim_wrapper):
    """Returns the gradients the model had and the step each parameter took."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    model(x).pow(2).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    optim_wrapper.step()
    steps = {n: p.detach() - before[n] for n, p in model.named_parameters()}
    return grads, steps


PARAMWISE = dict(custom_keys={'roi_head': dict(use_gc=False),
                              'backbone': dict(gc_conv_only=True, lr_mult=0.5)})


@pytest.mark.parametrize('optimizer,wrapper', [
    (dict(type='SGDGC', lr=0.1), {}),
    (dict(type='SGD', lr=0.1), dict(type='GCOptimWrapper')),
])
def test_custom_keys_control_gc_per_group(optimizer, wrapper):
    model, optim_wrapper = build(optimizer, PARAMWISE, **wrapper)
    grads, steps = one_step(model, optim_wrapper)
    # roi_head: use_gc=False -> plain SGD
    torch.testing.assert_close(steps['roi_head.weight'], -0.1 * grads['roi_head.weight'])
    # backbone: conv_only -> the conv is centralized, backbone_fc is not; lr_mult still works
    torch.testing.assert_close(steps['backbone.0.weight'],
                               -0.05 * reference_phi(grads['backbone.0.weight']))
    torch.testing.assert_close(steps['backbone_fc.weight'], -0.05 * grads['backbone_fc.weight'])
    # neck: the defaults
    torch.testing.assert_close(steps['neck.weight'], -0.1 * reference_phi(grads['neck.weight']))


def test_default_constructor_options_still_work():
    model, optim_wrapper = build(dict(type='AdamWGC', lr=1e-3, weight_decay=0.05),
                                 dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
    groups = {id(g['params'][0]): g for g in optim_wrapper.optimizer.param_groups}
    assert groups[id(model.backbone[1].weight)]['weight_decay'] == 0.0
    assert groups[id(model.neck.bias)]['weight_decay'] == 0.0
    assert groups[id(model.neck.weight)]['weight_decay'] == 0.05


def test_gc_loc_spelling_is_normalized():
    _, optim_wrapper = build(dict(type='AdamGC', lr=1e-3),
                             dict(custom_keys={'neck': dict(gc_loc=False)}))
    locs = {g['gc_loc'] for g in optim_wrapper.optimizer.param_groups}
    assert locs == {'grad', 'update'}


def test_unknown_custom_key_option_is_refused():
    with pytest.raises(ValueError, match=r"custom_keys\['roi_head'\]: unknown option\(s\) "
                                         r"\['use_cg'\]"):
        build(dict(type='SGDGC', lr=0.1), dict(custom_keys={'roi_head': dict(use_cg=False)}))


def test_optimizer_arguments_are_known_custom_key_options():
    _, optim_wrapper = build(dict(type='SGDGC', lr=0.1, momentum=0.9),
                             dict(custom_keys={'neck': dict(momentum=0.5)}))
    assert {g['momentum'] for g in optim_wrapper.optimizer.param_groups} == {0.9, 0.5}


def test_bad_gc_option_value_is_refused():
    with pytest.raises(ValueError, match=r"custom_keys\['neck'\]: gc_loc must be one of"):
        build(dict(type='AdamGC', lr=0.1), dict(custom_keys={'neck': dict(gc_loc='all')}))


def test_gc_options_without_gc_are_refused():
    with pytest.raises(ValueError, match='neither the optimizer .*SGD.* applies GC'):
        build(dict(type='SGD', lr=0.1), dict(custom_keys={'neck': dict(use_gc=False)}))
