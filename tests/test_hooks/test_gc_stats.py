"""GCStatsHook: its numbers against a direct computation on the gradients each step received,
the weight-mean drift under GC and without, and training unchanged by it, for a GC optimizer
(fused kernels and plain path), GCOptimWrapper and a plain optimizer."""
import json
import uuid
import warnings
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

import mmgc
from mmgc.hooks import GCStatsHook
from mmgc.hooks.gc_stats import QUANTITIES as GC_QUANTITIES
from mmgc.ops import fused_kernels

from ..test_utils.toy import ToyDataset, ToyModel

SGD = dict(lr=0.05, momentum=0.9, weight_decay=1e-3)
OPTIMS = {
    'SGD': dict(optimizer=dict(type='SGD', **SGD)),
    'SGDGC': dict(optimizer=dict(type='SGDGC', **SGD)),
    'SGDGC-plain': dict(optimizer=dict(type='SGDGC', **SGD)),  # fused kernels off
    'GCOptimWrapper': dict(type='GCOptimWrapper', optimizer=dict(type='SGD', lr=0.05,
                                                                 momentum=0.9)),
    'GCOptimWrapper-update': dict(type='GCOptimWrapper', gc_loc='update',
                                  optimizer=dict(type='Adam', lr=0.01)),
    'AdamWGC-update': dict(optimizer=dict(type='AdamWGC', lr=0.01, weight_decay=0.1,
                                          gc_loc='update')),
    'AdamWGC-grad': dict(optimizer=dict(type='AdamWGC', lr=0.01, weight_decay=0.1)),
    # a step every 2 iterations: the gradients summed over both (the second backward's record)
    'SGDGC-accumulate': dict(optimizer=dict(type='SGDGC', **SGD), accumulative_counts=2),
}
ITERS = 6


class Records(list):
    """Per iteration, each parameter's gradient; ``start``: the initial weights."""
    start: Dict[str, torch.Tensor]


def train(tmp_path: Path, optim: str, hook: dict = None, record: bool = False):
    """A toy Runner trained ITERS iterations; with ``record``, the gradient of every parameter
    as backward left it, per iteration (before any GC)."""
    model = ToyModel()
    grads = Records()
    if record:
        for name, p in model.named_parameters():
            p.register_post_accumulate_grad_hook(
                lambda p, name=name: grads[-1].__setitem__(name, p.grad.detach().clone()))
    runner = Runner(
        model=model, work_dir=str(tmp_path / uuid.uuid4().hex),
        experiment_name=f'gc_stats_{uuid.uuid4().hex}',
        train_dataloader=dict(dataset=ToyDataset(16), batch_size=4, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=True),
                              collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=ITERS),
        optim_wrapper=OPTIMS[optim], default_scope='mmengine', randomness=dict(seed=0),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1), checkpoint=None),
        visualizer=dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend')],
                        name=uuid.uuid4().hex),
        custom_hooks=[hook] if hook else None)
    if record:
        runner.register_hook(dict(type='RecordIterHook', grads=grads), priority='VERY_HIGH')
    with fused_kernels(optim != 'SGDGC-plain'):
        runner.train()
    return runner, grads


@MMENGINE_HOOKS.register_module(force=True)
class RecordIterHook(mmgc.hooks.gc_stats.Hook):
    """Keeps the weights training starts from and opens a new gradient record at each
    iteration (tests only)."""

    def __init__(self, grads):
        self.grads = grads

    def before_train(self, runner):
        self.grads.start = {name: p.detach().clone()
                            for name, p in runner.model.named_parameters()}

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.grads.append({})


def logged(runner, key: str) -> List[float]:
    values, _ = runner.message_hub.get_scalar(f'train/{key}').data
    return [float(v) for v in values]


def expected(grads: Dict[str, torch.Tensor], names) -> Dict[str, float]:
    """The hook's gradient quantities computed here, in float64, another way: Phi(g) from the
    projection matrix I - ee^T/M of each slice."""
    sq = sq_gc = sq_removed = 0.0
    top = top_gc = 0.0
    for name in names:
        rows = grads[name].double().reshape(grads[name].shape[0], -1)
        m = rows.shape[1]
        projection = torch.eye(m, dtype=torch.float64) - torch.full((m, m), 1.0 / m,
                                                                    dtype=torch.float64)
        centred = rows @ projection
        sq += float(rows.square().sum())
        sq_gc += float(centred.square().sum())
        sq_removed += float((rows - centred).square().sum())
        top = max(top, float(rows.abs().max()))
        top_gc = max(top_gc, float(centred.abs().max()))
    return dict(grad_norm=sq**0.5, grad_max=top, grad_norm_gc=sq_gc**0.5, grad_max_gc=top_gc,
                mean_energy=sq_removed / sq)


WEIGHTS = ('conv.weight', 'fc.weight')  # what GC applies to in the toy model


@pytest.mark.parametrize('optim', ['SGD', 'SGDGC', 'SGDGC-plain', 'GCOptimWrapper',
                                   'SGDGC-accumulate'])
def test_numbers_against_a_direct_computation(tmp_path, optim):
    runner, grads = train(tmp_path, optim, dict(type='GCStatsHook', interval=2, by_layer=True),
                          record=True)
    assert logged(runner, 'gc/iter') == [2.0, 4.0, 6.0]
    for key in ('grad_norm', 'grad_max', 'grad_norm_gc', 'grad_max_gc', 'mean_energy'):
        values = logged(runner, f'gc/{key}')
        assert len(values) == 3
        for value, it in zip(values, (1, 3, 5)):  # iterations 2, 4, 6 (0-based records)
            assert value == pytest.approx(expected(grads[it], WEIGHTS)[key], rel=1e-5)
        for name in WEIGHTS:
            per_layer = logged(runner, f'gc/{name}/{key}')
            want = [expected(grads[it], [name])[key] for it in (1, 3, 5)]
            assert per_layer == pytest.approx(want, rel=1e-5)
    # GC removes something, never adds: ||Phi(g)|| <= ||g|| (Thm 4.2).
    assert all(0 < e < 1 for e in logged(runner, 'gc/mean_energy'))
    assert all(a <= b for a, b in zip(logged(runner, 'gc/grad_norm_gc'),
                                      logged(runner, 'gc/grad_norm')))


@pytest.mark.parametrize('optim, moves', [
    ('SGD', True), ('SGDGC', False), ('SGDGC-plain', False), ('AdamWGC-update', False),
    ('GCOptimWrapper-update', False), ('AdamWGC-grad', True)])
def test_weight_mean_drift(tmp_path, optim, moves):
    """Eq. 4: the slice means stay where they started when every update is centralized (SGDGC
    with its L2 decay inside GC, GC on the update), and move without GC or under AdamW's
    decoupled decay and per-value scaling."""
    runner, _ = train(tmp_path, optim, dict(type='GCStatsHook', interval=1, by_layer=True))
    drift = logged(runner, 'gc/weight_mean_drift')
    assert len(drift) == ITERS
    if moves:
        assert drift[-1] > 1e-4
    else:
        assert max(drift) < 1e-6
    # The global number is the largest of the per-layer ones, which are checked directly.
    layers = {name: logged(runner, f'gc/{name}/weight_mean_drift')[-1] for name in WEIGHTS}
    assert drift[-1] == max(layers.values())


def test_drift_against_the_weights(tmp_path):
    """The drift logged at the end is the largest change of a slice mean from the weights
    training started with (recorded here as training began)."""
    runner, grads = train(tmp_path, 'SGD', dict(type='GCStatsHook', interval=ITERS,
                                                 by_layer=True), record=True)
    start = grads.start
    params = dict(runner.model.named_parameters())
    want = {}
    for name in WEIGHTS:
        now = params[name].detach().double().flatten(1).mean(1)
        want[name] = float((now - start[name].double().flatten(1).mean(1)).abs().max())
        assert logged(runner, f'gc/{name}/weight_mean_drift') == [pytest.approx(want[name])]
    assert logged(runner, 'gc/weight_mean_drift') == [pytest.approx(max(want.values()))]


@pytest.mark.parametrize('optim', list(OPTIMS))
def test_training_is_unchanged_to_the_bit(tmp_path, optim):
    with_hook, _ = train(tmp_path, optim, dict(type='GCStatsHook', interval=1, by_layer=True))
    without, _ = train(tmp_path, optim)
    a = with_hook.model.state_dict()
    b = without.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa = with_hook.optim_wrapper.optimizer.state_dict()['state']
    sb = without.optim_wrapper.optimizer.state_dict()['state']
    for index in sa:
        for key, value in sa[index].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(sb[index][key]))


def test_hooks_are_removed_after_training(tmp_path):
    runner, _ = train(tmp_path, 'SGD', dict(type='GCStatsHook', interval=1))
    assert not runner.optim_wrapper.optimizer._optimizer_step_pre_hooks
    wrapped, _ = train(tmp_path, 'GCOptimWrapper', dict(type='GCStatsHook', interval=1))
    assert 'gc_context' not in wrapped.optim_wrapper.__dict__


@pytest.mark.parametrize('by_layer', [False, True])
def test_scalars_reach_the_visualization_backends(tmp_path, by_layer):
    """scalars.json (what every backend gets) holds each value as computed at its gc/iter:
    not the mean over iterations that mmengine's log processor gives keys like grad_norm."""
    runner, _ = train(tmp_path, 'SGDGC', dict(type='GCStatsHook', interval=3,
                                               by_layer=by_layer))
    files = list(Path(runner.work_dir).glob('*/vis_data/scalars.json'))
    assert len(files) == 1
    lines = [json.loads(line) for line in files[0].read_text().splitlines()]
    with_gc = [line for line in lines if 'gc/grad_norm' in line]
    assert [line['gc/iter'] for line in with_gc] == [3, 3, 3, 6]  # the last value, each line
    keys = [f'gc/{q}' for q in GC_QUANTITIES]
    if by_layer:
        keys += [f'gc/{name}/{q}' for name in WEIGHTS for q in GC_QUANTITIES]
    assert sorted(k for k in with_gc[-1] if k.startswith('gc/')) == sorted(keys + ['gc/iter'])
    for key in keys:
        computed = logged(runner, key)
        assert len(computed) == 2 and computed[0] != computed[1]
        assert [line[key] for line in with_gc if line['step'] in (3, 6)] == pytest.approx(
            computed, rel=1e-6)


def test_a_configured_log_method_is_kept(tmp_path):
    """A config's own custom_cfg entry for a gc key wins over the hook's."""
    model = ToyModel()
    runner = Runner(
        model=model, work_dir=str(tmp_path / 'w'), experiment_name=uuid.uuid4().hex,
        train_dataloader=dict(dataset=ToyDataset(16), batch_size=4, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=True),
                              collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=ITERS), optim_wrapper=OPTIMS['SGD'],
        default_scope='mmengine', randomness=dict(seed=0),
        log_processor=dict(by_epoch=False, custom_cfg=[
            dict(data_src='gc/grad_norm', method_name='max', window_size='global')]),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1), checkpoint=None),
        custom_hooks=[dict(type='GCStatsHook', interval=2)])
    runner.train()
    sources = [(c['data_src'], c['method_name']) for c in runner.log_processor.custom_cfg]
    assert ('gc/grad_norm', 'max') in sources and ('gc/grad_norm', 'current') not in sources
    assert ('gc/grad_norm_gc', 'current') in sources


@pytest.mark.parametrize('scope', ['mmengine', 'mmdet', 'mmpretrain', None])
def test_registered_for_every_scope(scope):
    if scope is None:
        hook = MMENGINE_HOOKS.build(dict(type='GCStatsHook', interval=7))
    else:
        with DefaultScope.overwrite_default_scope(scope):
            registry = MMENGINE_HOOKS
            if scope == 'mmdet':
                from mmdet.registry import HOOKS as registry
            elif scope == 'mmpretrain':
                from mmpretrain.registry import HOOKS as registry
            hook = registry.build(dict(type='GCStatsHook', interval=7))
    assert isinstance(hook, GCStatsHook) and hook.interval == 7
    assert mmgc.HOOKS.get('mmgc.GCStatsHook') is GCStatsHook


@pytest.mark.parametrize('options, error', [
    (dict(interval=0), ValueError), (dict(interval=2.5), ValueError),
    (dict(interval=True), ValueError), (dict(interval='50'), ValueError),
    (dict(by_layer='yes'), TypeError), (dict(conv_only=1), TypeError)])
def test_bad_options(options, error):
    with pytest.raises(error, match='GCStatsHook'):
        GCStatsHook(**options)


def test_conv_only_counts_conv_weights_only(tmp_path):
    runner, grads = train(tmp_path, 'SGD', dict(type='GCStatsHook', interval=2, conv_only=True),
                          record=True)
    assert logged(runner, 'gc/grad_norm') == pytest.approx(
        [expected(grads[it], ['conv.weight'])['grad_norm'] for it in (1, 3, 5)], rel=1e-5)


class Hostile(torch.Tensor):
    """A parameter subclass whose reductions fail (as a sharded tensor's may)."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.aminmax, torch.Tensor.aminmax, torch.Tensor.sum, torch.sum):
            raise RuntimeError('no reductions on this tensor')
        return super().__torch_function__(func, types, args, kwargs or {})


def test_a_parameter_it_cannot_measure_is_left_out_with_one_warning(tmp_path):
    """Training never stops for the hook: a parameter whose numbers cannot be computed is left
    out with one warning; training gives the same weights as without the hook."""
    def hostile_model():
        model = ToyModel()
        model.conv.weight = torch.nn.Parameter(model.conv.weight.detach().as_subclass(Hostile))
        return model

    results = []
    for hook in (dict(type='GCStatsHook', interval=1, by_layer=True), None):
        torch.manual_seed(0)
        model = hostile_model()
        runner = Runner(
            model=model, work_dir=str(tmp_path / uuid.uuid4().hex),
            experiment_name=uuid.uuid4().hex,
            train_dataloader=dict(dataset=ToyDataset(16), batch_size=4, num_workers=0,
                                  sampler=dict(type='DefaultSampler', shuffle=True),
                                  collate_fn=dict(type='default_collate')),
            train_cfg=dict(by_epoch=False, max_iters=3), optim_wrapper=OPTIMS['SGD'],
            default_scope='mmengine', randomness=dict(seed=0),
            default_hooks=dict(logger=dict(type='LoggerHook', interval=1), checkpoint=None),
            custom_hooks=[hook] if hook else None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            runner.train()
        left_out = [w for w in caught if 'GCStatsHook: conv.weight (Hostile)' in str(w.message)]
        assert len(left_out) == (1 if hook else 0)
        if hook:
            assert 'no reductions' in str(left_out[0].message)
            assert logged(runner, 'gc/iter') == [1.0, 2.0, 3.0]
            assert logged(runner, 'gc/fc.weight/weight_mean_drift')[-1] > 0
            assert 'train/gc/conv.weight/weight_mean_drift' not in runner.message_hub.log_scalars
        results.append({k: v.detach().as_subclass(torch.Tensor).clone()
                        for k, v in runner.model.state_dict().items()})
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


def test_fsdp_flat_shards_are_named_as_left_out():
    """Weights FSDP flattened into 1-D shards cannot be measured per row here: one warning says
    so (GC itself still centralizes them); the 2-D weights are still chosen."""
    weight = torch.nn.Parameter(torch.randn(3, 4))
    flat = torch.nn.Parameter(torch.randn(10))
    flat._fsdp_flattened = True
    optimizer = torch.optim.SGD([weight, flat], lr=0.1)
    hook = GCStatsHook()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert hook._selected(optimizer) == [weight]
        assert hook._selected(optimizer) == [weight]
    messages = [str(w.message) for w in caught if 'GCStatsHook' in str(w.message)]
    assert len(messages) == 1 and 'FSDP flattened into 1-D shards' in messages[0]


def test_accumulation_measures_at_the_next_real_step(tmp_path):
    """accumulative_counts=2, interval 3: iteration 3 takes no step, so the hook measures at
    the next one that does (4), on the gradients summed over iterations 3 and 4; then at 6."""
    runner, grads = train(tmp_path, 'SGDGC-accumulate', dict(type='GCStatsHook', interval=3),
                          record=True)
    assert logged(runner, 'gc/iter') == [4.0, 6.0]
    for key in ('grad_norm', 'grad_norm_gc', 'mean_energy'):
        want = [expected(grads[it], WEIGHTS)[key] for it in (3, 5)]
        assert logged(runner, f'gc/{key}') == pytest.approx(want, rel=1e-5)
