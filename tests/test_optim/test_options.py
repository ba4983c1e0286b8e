"""Options of the GC optimizers and wrappers, wherever they enter: the constructor,
``add_param_group``, ``load_state_dict``, the wrappers and mmengine's constructors. Each bad one
is refused in one line that names the owner, the option and the value; what torch accepts is
accepted, and what torch refuses is refused by torch's own error."""
import copy
import math
import pickle
import warnings

import pytest
import torch
import torch.nn as nn
from mmengine.optim import build_optim_wrapper

from mmgc import SGDGC, SGDWGC, AdagradGC, AdamGC, AdamWGC, AmpGCOptimWrapper, GCOptimWrapper

TWINS = {SGDGC: torch.optim.SGD, AdamGC: torch.optim.Adam, AdamWGC: torch.optim.AdamW,
         AdagradGC: torch.optim.Adagrad}


def make_params(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(s, generator=gen, dtype=torch.float64))
            for s in [(4, 3, 3, 3), (5, 6), (5,)]]


def one_line(message):
    return '\n' not in message and message.strip() == message


# --- constructor -----------------------------------------------------------------------------

BAD_CONSTRUCTOR_OPTIONS = [
    (SGDGC, dict(lr='abc'), TypeError, "SGDGC: lr must be a number or a 1-element tensor, "
     "got 'abc'"),
    (SGDGC, dict(lr=[0.1]), TypeError, 'SGDGC: lr must be a number or a 1-element tensor, '
     'got [0.1]'),
    (SGDWGC, dict(lr=None), TypeError, 'SGDWGC: lr must be a number or a 1-element tensor, '
     'got None'),
    (SGDGC, dict(lr=0.1, momentum='0.9'), TypeError, "SGDGC: momentum must be a number or a "
     "1-element tensor, got '0.9'"),
    (AdamGC, dict(betas=0.9), TypeError, 'AdamGC: betas must be a pair (beta1, beta2), got 0.9'),
    (AdamWGC, dict(betas=(0.9,)), ValueError, 'AdamWGC: betas must be a pair (beta1, beta2), '
     'got 1 values: (0.9,)'),
    (AdamGC, dict(betas=(0.9, 0.99, 0.5)), ValueError, 'AdamGC: betas must be a pair (beta1, '
     'beta2), got 3 values: (0.9, 0.99, 0.5)'),
    (AdamGC, dict(betas=('a', 'b')), TypeError, "AdamGC: betas must be a pair of numbers, got "
     "('a', 'b')"),
    (SGDGC, dict(lr=math.nan), ValueError, 'SGDGC param group 0: lr must be finite, got nan'),
    (SGDGC, dict(lr=0.1, momentum=math.inf), ValueError,
     'SGDGC param group 0: momentum must be finite, got inf'),
    (SGDWGC, dict(lr=torch.tensor(math.nan)), ValueError,
     'SGDWGC param group 0: lr must be finite, got tensor(nan)'),
    (AdagradGC, dict(weight_decay=math.inf), ValueError,
     'AdagradGC param group 0: weight_decay must be finite, got inf'),
    (AdamGC, dict(eps=math.inf), ValueError, 'AdamGC param group 0: eps must be finite, got inf'),
    (AdamGC, dict(gc_loc='weights'), ValueError,
     "AdamGC: gc_loc must be one of ('grad', 'update'), got 'weights'"),
    (SGDGC, dict(gc_loc='update'), ValueError, "SGDGC: gc_loc must be one of ('grad',), "
     "got 'update'"),
    (AdagradGC, dict(use_gc='yes'), ValueError, "AdagradGC: use_gc must be True or False, "
     "got 'yes'"),
]


@pytest.mark.parametrize('cls,kwargs,error,message', BAD_CONSTRUCTOR_OPTIONS,
                         ids=[f'{c.__name__}-{k}' for c, k, _, _ in BAD_CONSTRUCTOR_OPTIONS])
def test_bad_options_are_one_line_naming_optimizer_option_and_value(cls, kwargs, error, message):
    with pytest.raises(error) as caught:
        cls(make_params(), **kwargs)
    assert str(caught.value) == message
    assert one_line(str(caught.value))


TORCH_REFUSES = [
    (SGDGC, dict(lr=-0.1)),
    (SGDGC, dict(lr=0.1, momentum=-0.9)),
    (SGDGC, dict(lr=torch.tensor([0.1, 0.2]))),
    (SGDGC, dict(lr=0.1, nesterov=True)),
    (SGDWGC, dict(lr=0.1, weight_decay=-1e-4)),
    (AdamGC, dict(betas=(1.0, 0.999))),
    (AdamWGC, dict(betas=(0.9, -0.1))),
    (AdamGC, dict(betas=(0.9, 1))),
    (AdamGC, dict(eps=-1.0)),
    (AdamWGC, dict(lr=torch.tensor(math.nan))),
    (AdamGC, dict(eps=math.nan)),
    (AdagradGC, dict(lr_decay=-1.0)),
    (AdagradGC, dict(initial_accumulator_value=-1.0)),
]


@pytest.mark.parametrize('cls,kwargs', TORCH_REFUSES,
                         ids=[f'{c.__name__}-{k}' for c, k in TORCH_REFUSES])
def test_what_torch_refuses_is_refused_by_torchs_own_error(cls, kwargs):
    torch_cls = TWINS.get(cls, torch.optim.SGD)
    with pytest.raises(Exception) as expected:
        torch_cls(make_params(), **kwargs)
    with pytest.raises(type(expected.value)) as caught:
        cls(make_params(), **kwargs)
    assert str(caught.value) == str(expected.value)


TORCH_ACCEPTS = [
    (SGDGC, dict(lr=0.1, dampening=-0.5)),
    (SGDGC, dict(lr=torch.tensor(0.1), momentum=0.9)),
    (SGDGC, dict(lr=True)),
    (AdamGC, dict(lr=torch.tensor(1e-3), betas=(torch.tensor(0.9), torch.tensor(0.99)))),
    (AdamWGC, dict(lr=0, weight_decay=0, eps=0)),
    (AdagradGC, dict(lr=1, lr_decay=0)),
]


@pytest.mark.parametrize('cls,kwargs', TORCH_ACCEPTS,
                         ids=[f'{c.__name__}-{k}' for c, k in TORCH_ACCEPTS])
def test_what_torch_accepts_is_accepted(cls, kwargs):
    TWINS[cls](make_params(), **kwargs)
    params = make_params()
    optimizer = cls(params, **kwargs)
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()


# --- param groups ----------------------------------------------------------------------------


def test_nesterov_in_a_group_takes_momentum_from_the_defaults():
    params, twin_params = make_params(), make_params()
    optimizer = SGDGC([dict(params=params[:2], nesterov=True), dict(params=params[2:])],
                      lr=0.1, momentum=0.9, use_gc=False)
    twin = torch.optim.SGD([dict(params=twin_params[:2], nesterov=True),
                            dict(params=twin_params[2:])], lr=0.1, momentum=0.9)
    for _ in range(3):
        for p, t in zip(params, twin_params):
            p.grad = torch.ones_like(p) + p.detach()
            t.grad = torch.ones_like(t) + t.detach()
        optimizer.step()
        twin.step()
    for p, t in zip(params, twin_params):
        assert torch.equal(p, t)


BAD_GROUPS = [
    (dict(lr=math.nan), ValueError, 'SGDGC param group 1: lr must be finite, got nan'),
    (dict(lr='fast'), TypeError, "SGDGC param group 1: lr must be a number or a 1-element "
     "tensor, got 'fast'"),
    (dict(lr=-1.0), ValueError, 'SGDGC param group 1: lr must be >= 0, got -1.0'),
    (dict(lr=torch.tensor([0.1, 0.2])), ValueError, 'SGDGC param group 1: lr must be a number '
     'or a 1-element tensor, got a tensor of 2 values'),
    (dict(momentum=0.0, nesterov=True), ValueError, 'SGDGC param group 1: nesterov=True needs '
     'momentum > 0 and dampening == 0, got momentum=0.0, dampening=0'),
    (dict(use_cg=False), ValueError, "SGDGC param group 1: unknown option 'use_cg'; did you "
     "mean 'use_gc'?"),
    (dict(gc_conv_onyl=True), ValueError, "SGDGC param group 1: unknown option 'gc_conv_onyl'; "
     "did you mean 'gc_conv_only'?"),
    (dict(gc_location='grad'), ValueError, "SGDGC param group 1: unknown option 'gc_location'; "
     "did you mean 'gc_loc'?"),
    (dict(gc_loc='update'), ValueError, "SGDGC param group 1: gc_loc must be one of ('grad',), "
     "got 'update'"),
    (dict(use_gc=1), ValueError, 'SGDGC param group 1: use_gc must be True or False, got 1'),
    (dict(differentiable=True), ValueError, 'SGDGC param group 1: differentiable=True needs '
     'use_gc=False (GC changes the gradients in place, outside autograd)'),
]


@pytest.mark.parametrize('group,error,message', BAD_GROUPS,
                         ids=[m.split(': ')[1] for _, _, m in BAD_GROUPS])
def test_bad_param_group_is_refused_and_not_added(group, error, message):
    params = make_params()
    optimizer = SGDGC(params[:2], lr=0.1, momentum=0.9)
    with pytest.raises(error) as caught:
        optimizer.add_param_group(dict(params=params[2:], **group))
    assert str(caught.value) == message
    assert len(optimizer.param_groups) == 1


def test_unrelated_extra_group_keys_are_kept():
    """mmengine and schedulers put their own keys into groups (initial_lr, name, ...)."""
    params = make_params()
    optimizer = SGDGC([dict(params=params, initial_lr=0.1, name='backbone', gcd=3)], lr=0.1)
    assert optimizer.param_groups[0]['name'] == 'backbone'


@pytest.mark.parametrize('copy_of', [copy.deepcopy, lambda o: pickle.loads(pickle.dumps(o))],
                         ids=['deepcopy', 'pickle'])
def test_add_param_group_after_a_copy(copy_of):
    params = make_params()
    optimizer = AdamWGC(params[:2], lr=1e-3, gc_loc='update', gc_conv_only=True)
    copied = copy_of(optimizer)
    copied.add_param_group(dict(params=[nn.Parameter(torch.randn(3, 4))]))
    assert copied.param_groups[-1]['gc_loc'] == 'update'
    assert copied.param_groups[-1]['gc_conv_only'] is True
    copied.add_param_group(dict(params=[nn.Parameter(torch.randn(3, 4))], gc_loc=True))
    assert copied.param_groups[-1]['gc_loc'] == 'grad'


def test_misspelled_gc_option_through_mmengines_default_constructor_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(4, 2))
    for cfg in (dict(optimizer=dict(type='SGDGC', lr=0.1)),
                dict(type='GCOptimWrapper', optimizer=dict(type='SGD', lr=0.1))):
        cfg = dict(cfg, paramwise_cfg=dict(custom_keys={'1': dict(use_cg=False)}))
        with pytest.raises(ValueError, match=r"unknown option 'use_cg'; did you mean 'use_gc'"):
            build_optim_wrapper(model, cfg)


# --- load_state_dict ------------------------------------------------------------------------


def saved_with(cls, **options):
    params = make_params()
    optimizer = cls(params, lr=1e-3, **options)
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()
    return copy.deepcopy(optimizer.state_dict())


@pytest.mark.parametrize('value', ['bogus', 3, None])
def test_loaded_bad_gc_loc_is_refused(value):
    state = saved_with(AdamWGC)
    state['param_groups'][0]['gc_loc'] = value
    with pytest.raises(ValueError, match=r"AdamWGC param group 0: gc_loc must be one of"):
        AdamWGC(make_params(), lr=1e-3).load_state_dict(state)
    net = nn.Linear(3, 2)
    wrapper = GCOptimWrapper(torch.optim.AdamW(net.parameters(), lr=1e-3))
    state = copy.deepcopy(wrapper.state_dict())
    state['param_groups'][0]['gc_loc'] = value
    with pytest.raises(ValueError, match=r"GCOptimWrapper param group 0: gc_loc must be one of"):
        wrapper.load_state_dict(state)


def test_loaded_misspelled_gc_option_is_refused():
    state = saved_with(SGDGC)
    state['param_groups'][0]['use_cg'] = False
    with pytest.raises(ValueError, match="unknown option 'use_cg'"):
        SGDGC(make_params(), lr=1e-3).load_state_dict(state)


def test_checkpoint_gc_options_win_with_a_warning_for_optimizers_and_wrappers():
    """The same rule for a GC optimizer and GCOptimWrapper: the state dict's GC options are
    used (as its lr is), and a difference from the configured ones is said."""
    state = saved_with(AdamWGC, gc_loc='update')
    resumed = AdamWGC(make_params(), lr=1e-3)
    with pytest.warns(UserWarning, match=r"AdamWGC: .*group 0: gc_loc='update' \(configured "
                      r"'grad'\)"):
        resumed.load_state_dict(state)
    assert resumed.param_groups[0]['gc_loc'] == 'update'

    net = nn.Linear(3, 2)
    wrapper = GCOptimWrapper(torch.optim.SGD(net.parameters(), lr=0.1), gc_loc='update')
    state = copy.deepcopy(wrapper.state_dict())
    assert state['param_groups'][0]['gc_loc'] == 'update'  # saved with the optimizer
    resumed = GCOptimWrapper(torch.optim.SGD(net.parameters(), lr=0.1))
    with pytest.warns(UserWarning, match=r"GCOptimWrapper: .*gc_loc='update' \(configured "
                      r"'grad'\)"):
        resumed.load_state_dict(state)
    assert resumed.optimizer.param_groups[0]['gc_loc'] == 'update'

    with warnings.catch_warnings():
        warnings.simplefilter('error')  # the same options: nothing to say
        AdamWGC(make_params(), lr=1e-3, gc_loc='update').load_state_dict(
            saved_with(AdamWGC, gc_loc='update'))


def test_torch_checkpoint_keeps_the_configured_options_of_each_group():
    params = make_params()
    plain = torch.optim.SGD([dict(params=params[:2]), dict(params=params[2:])], lr=0.1)
    state = copy.deepcopy(plain.state_dict())
    resumed = SGDGC([dict(params=params[:2]), dict(params=params[2:], use_gc=False)], lr=0.1)
    resumed.load_state_dict(state)
    assert [g['use_gc'] for g in resumed.param_groups] == [True, False]
    wrapper = GCOptimWrapper(torch.optim.SGD(
        [dict(params=params[:2], gc_conv_only=True), dict(params=params[2:])], lr=0.1))
    wrapper.load_state_dict(state)
    assert [g['gc_conv_only'] for g in wrapper.optimizer.param_groups] == [True, False]


# --- wrappers --------------------------------------------------------------------------------


def test_wrappers_take_positional_arguments_as_mmengines(monkeypatch):
    from mmengine.optim.optimizer import amp_optimizer_wrapper
    net = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    wrapper = GCOptimWrapper(optimizer, 2, dict(max_norm=1.0), gc_loc='update')
    assert wrapper.optimizer is optimizer and wrapper._accumulative_counts == 2
    assert wrapper.clip_grad_kwargs == dict(max_norm=1.0)
    assert wrapper.gc_defaults['gc_loc'] == 'update'
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available', lambda: True)
    amp = AmpGCOptimWrapper(512.0, None, False, optimizer=optimizer, gc_conv_only=True)
    assert amp._scale_update_param == 512.0
    assert amp.gc_defaults['gc_conv_only'] is True


def test_wrapper_groups_with_misspelled_gc_options_are_refused():
    net = nn.Linear(3, 2)
    optimizer = torch.optim.SGD([dict(params=net.parameters(), gc_conv_onyl=True)], lr=0.1)
    with pytest.raises(ValueError, match="GCOptimWrapper param group 0: unknown option "
                       "'gc_conv_onyl'; did you mean 'gc_conv_only'"):
        GCOptimWrapper(optimizer)
