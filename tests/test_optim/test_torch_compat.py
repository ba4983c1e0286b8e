"""With ``use_gc=False`` a GC optimizer *is* its torch class: the inputs and error inputs of
torch's own optimizer test database (``torch.testing._internal.common_optimizers.optim_db``),
hooks, state-dict hooks, printing and no-op steps, checked against the torch class itself."""
import copy
import pickle
import re
import warnings

import pytest
import torch
import torch.backends

from torch.optim.optimizer import register_optimizer_step_post_hook

from mmgc import SGDGC, AdagradGC, AdamGC, AdamWGC

# torch's test utilities freeze torch.backends' global flags when imported; the rest of the
# suite (mmengine's Runner sets cudnn flags) runs in this process, so they are thawed again.
_frozen = torch.backends.flags_frozen()
from torch.testing._internal.common_optimizers import (  # noqa: E402
    OptimizerErrorEnum, _get_optim_inputs_including_global_cliquey_kwargs, optim_db)

if not _frozen:
    torch.backends.flags_frozen.__globals__['__allow_nonbracketed_mutation_flag'] = True
assert torch.backends.flags_frozen() == _frozen

TWINS = {torch.optim.SGD: SGDGC, torch.optim.Adam: AdamGC, torch.optim.AdamW: AdamWGC,
         torch.optim.Adagrad: AdagradGC}
INFOS = [info for info in optim_db if info.optim_cls in TWINS]
SHAPES = [(4, 3, 3, 3), (5, 7), (5,)]


def info_id(info):
    return info.optim_cls.__name__


def make_params(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in SHAPES]


def clone_params(params):
    return [torch.nn.Parameter(p.detach().clone()) for p in params]


def set_grads(params, step):
    gen = torch.Generator().manual_seed(100 + step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)


def outcome(build):
    """What constructing (and stepping, when ``build`` does) ends in: None, or the exception
    type and message; warnings are recorded too."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        try:
            build()
            error = None
        except Exception as exc:  # noqa: BLE001  (compared, not swallowed)
            error = (type(exc), str(exc))
    return error, sorted({(w.category.__name__, str(w.message)) for w in caught})


def error_cases():
    for info in INFOS:
        for index, error_input in enumerate(info.optim_error_inputs_func('cpu', torch.float32)):
            yield pytest.param(info, error_input, id=f'{info_id(info)}-{index}-'
                               f'{error_input.optimizer_error_input.desc}')


@pytest.mark.parametrize('use_gc', [False, True], ids=['gc-off', 'gc-on'])
@pytest.mark.parametrize('info,error_input', list(error_cases()))
def test_error_inputs_end_as_in_torch(info, error_input, use_gc):
    """The same exception type and message as torch's (or the same warning), for every error
    input of torch's test database; GC on or off does not change that."""
    optimizer_input = error_input.optimizer_error_input

    def build(cls, **gc):
        params = optimizer_input.params
        if params is None:
            params = [torch.nn.Parameter(torch.randn(2, 3))]
        optimizer = cls(params, **optimizer_input.kwargs, **gc)
        if error_input.error_on == OptimizerErrorEnum.STEP_ERROR:
            for group in optimizer.param_groups:
                for p in group['params']:
                    p.grad = torch.rand_like(p)
            optimizer.step()

    torch_outcome = outcome(lambda: build(info.optim_cls))
    gc_outcome = outcome(lambda: build(TWINS[info.optim_cls], use_gc=use_gc))
    assert gc_outcome == torch_outcome
    # and torch's database agrees about what that is
    error, caught = torch_outcome
    if issubclass(error_input.error_type, Warning):
        assert any(c == error_input.error_type.__name__ and re.search(error_input.error_regex, m)
                   for c, m in caught)
    else:
        assert error is not None and issubclass(error[0], error_input.error_type)
        assert re.search(error_input.error_regex, error[1])


def input_cases():
    for info in INFOS:
        for optim_input in _get_optim_inputs_including_global_cliquey_kwargs('cpu', None, info):
            yield pytest.param(info, optim_input.kwargs, id=f'{info_id(info)}-{optim_input.desc}')


@pytest.mark.parametrize('info,kwargs', list(input_cases()))
def test_every_torch_input_steps_as_torch_with_gc_off(info, kwargs):
    """Every configuration torch's tests run (foreach, fused, differentiable, tensor lr, ...)."""
    params = make_params()
    twin_params = clone_params(params)
    if kwargs.get('differentiable'):  # stepped in place, so not leaves, as in torch's tests
        params = [p.clone() for p in params]
        twin_params = [p.clone() for p in twin_params]

    def build(cls, ps, **gc):
        try:
            return cls(ps, **kwargs, **gc), None
        except Exception as exc:  # noqa: BLE001
            return None, (type(exc), str(exc))

    optimizer, gc_error = build(TWINS[info.optim_cls], params, use_gc=False)
    twin, torch_error = build(info.optim_cls, twin_params)
    assert gc_error == torch_error
    if twin is None:
        return
    for step in range(3):
        set_grads(params, step)
        set_grads(twin_params, step)
        optimizer.step()
        twin.step()
    for p, t in zip(params, twin_params):
        assert torch.equal(p.detach(), t.detach())
    assert optimizer.state_dict()['state'].keys() == twin.state_dict()['state'].keys()


@pytest.mark.parametrize('info', INFOS, ids=info_id)
def test_differentiable_with_gc_is_refused_in_one_line(info):
    with pytest.raises(ValueError, match=r'differentiable=True needs use_gc=False'):
        TWINS[info.optim_cls](make_params(), differentiable=True)


@pytest.mark.parametrize('use_gc', [False, True], ids=['gc-off', 'gc-on'])
@pytest.mark.parametrize('info', INFOS, ids=info_id)
def test_step_hooks_run_once_per_step(info, use_gc):
    params = make_params()
    optimizer = TWINS[info.optim_cls](params, use_gc=use_gc)
    calls = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: calls.append(('pre', opt)))
    optimizer.register_step_post_hook(lambda opt, args, kwargs: calls.append(('post', opt)))
    handle = register_optimizer_step_post_hook(
        lambda opt, args, kwargs: calls.append(('global', opt)))
    try:
        for step in range(2):
            set_grads(params, step)
            optimizer.step()
    finally:
        handle.remove()
    assert calls == [('pre', optimizer), ('post', optimizer), ('global', optimizer)] * 2


@pytest.mark.parametrize('use_gc', [False, True], ids=['gc-off', 'gc-on'])
@pytest.mark.parametrize('info', INFOS, ids=info_id)
def test_state_dict_hooks(info, use_gc):
    params = make_params()
    optimizer = TWINS[info.optim_cls](params, use_gc=use_gc)
    set_grads(params, 0)
    optimizer.step()

    def add_marker(opt, state_dict):
        state_dict['marker'] = type(opt).__name__
        return state_dict

    optimizer.register_state_dict_pre_hook(lambda opt: setattr(opt, 'pre_called', True))
    optimizer.register_state_dict_post_hook(add_marker)
    saved = optimizer.state_dict()
    assert optimizer.pre_called and saved['marker'] == type(optimizer).__name__

    loaded = TWINS[info.optim_cls](clone_params(params), use_gc=use_gc)
    seen = []

    def drop_marker(opt, state_dict):
        seen.append(state_dict.pop('marker'))
        return state_dict

    loaded.register_load_state_dict_pre_hook(drop_marker)
    loaded.register_load_state_dict_post_hook(lambda opt: seen.append('post'))
    loaded.load_state_dict(saved)
    assert seen == [type(optimizer).__name__, 'post']
    assert loaded.state_dict()['param_groups'] == optimizer.state_dict()['param_groups']


@pytest.mark.parametrize('info', INFOS, ids=info_id)
def test_printing_shows_torch_lines_and_gc_options(info):
    kwargs = dict(lr=torch.tensor(0.01)) if info.optim_cls is not torch.optim.Adagrad else {}
    printed = repr(TWINS[info.optim_cls](make_params(), **kwargs, use_gc=False))
    torch_printed = repr(info.optim_cls(make_params(), **kwargs))
    assert printed.startswith(TWINS[info.optim_cls].__name__ + ' (')
    assert set(torch_printed.splitlines()[1:]) <= set(printed.splitlines()[1:])
    assert '    use_gc: False' in printed.splitlines()


@pytest.mark.parametrize('use_gc', [False, True], ids=['gc-off', 'gc-on'])
@pytest.mark.parametrize('info', INFOS, ids=info_id)
def test_steps_without_gradients_or_with_zero_gradients_change_nothing(info, use_gc):
    params = make_params()
    twin_params = clone_params(params)
    before = [p.detach().clone() for p in params]
    optimizer = TWINS[info.optim_cls](params, weight_decay=0, use_gc=use_gc)
    twin = info.optim_cls(twin_params, weight_decay=0)
    optimizer.step()  # no gradient at all
    twin.step()
    assert str(optimizer.state_dict()['state']) == str(twin.state_dict()['state'])
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for p, b in zip(params, before):
        assert torch.equal(p.detach(), b)


@pytest.mark.parametrize('info', INFOS, ids=info_id)
def test_copies_and_pickles_take_new_param_groups(info):
    optimizer = TWINS[info.optim_cls](make_params(), use_gc=False, gc_conv_only=True)
    for copy_of in (lambda o: pickle.loads(pickle.dumps(o)), copy.deepcopy):
        copied = copy_of(optimizer)
        copied.add_param_group(dict(params=[torch.nn.Parameter(torch.randn(3, 3))]))
        assert copied.param_groups[-1]['use_gc'] is False
        assert copied.param_groups[-1]['gc_conv_only'] is True
