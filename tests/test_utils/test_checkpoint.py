"""Safe loading of mmengine checkpoints (torch >= 2.6 weights_only) after ``import mmgc``.

Real checkpoints, written by mmengine's Runner for every GC optimizer and wrapper, load in safe
mode and resume to the uninterrupted run's weights in a fresh process; what they hold comes back
as mmengine and numpy's own types. Hostile, hand-made checkpoints are in
test_crafted_checkpoints.py.
"""
import itertools
import json
import os
import pickle
import pickletools
import subprocess
import sys
import zipfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.optim.optimizer import amp_optimizer_wrapper
from mmengine.runner import Runner

import mmgc  # noqa: F401
from mmgc import AmpGCOptimWrapper

from .toy import ToyDataset, ToyModel

REPO = Path(__file__).resolve().parents[2]
_RUNS = itertools.count()  # mmengine keys its message hubs and loggers by experiment name

# Every optimizer and optim wrapper mmgc ships, as a Runner's optim_wrapper config; 'amp' is
# AmpGCOptimWrapper, which make_runner builds by hand on a CPU (see there).
OPTIM_WRAPPERS = {
    'SGDGC': dict(optimizer=dict(type='SGDGC', lr=0.05, momentum=0.9, weight_decay=1e-4)),
    'SGDWGC': dict(optimizer=dict(type='SGDWGC', lr=0.05, momentum=0.9, weight_decay=1e-2)),
    'AdamGC': dict(optimizer=dict(type='AdamGC', lr=1e-2, weight_decay=1e-4)),
    'AdamWGC': dict(optimizer=dict(type='AdamWGC', lr=1e-2, weight_decay=1e-2)),
    'AdagradGC': dict(optimizer=dict(type='AdagradGC', lr=0.05)),
    'GCOptimWrapper-RMSprop': dict(type='GCOptimWrapper', gc_loc='update',
                                   optimizer=dict(type='RMSprop', lr=1e-3, momentum=0.9)),
    'GCOptimWrapper-SGD': dict(type='GCOptimWrapper', optimizer=dict(type='SGD', lr=0.05),
                               clip_grad=dict(max_norm=1.0)),
    'AmpGCOptimWrapper-SGD': 'amp',
}


def _amp_gc_optim_wrapper(model):
    """AmpGCOptimWrapper on a CPU: mmengine asserts a GPU (patched for the constructor only),
    and its CUDA GradScaler disables itself here, so it gets torch's CPU one."""
    with mock.patch.object(amp_optimizer_wrapper, 'is_cuda_available', lambda: True):
        wrapper = AmpGCOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.05,
                                                              momentum=0.9))
    wrapper.loss_scaler = torch.amp.GradScaler('cpu', init_scale=1024.0, growth_interval=2)
    return wrapper


def make_runner(work_dir, max_iters, resume_from=None, optim='SGDGC'):
    torch.manual_seed(0)
    model = ToyModel()
    optim_wrapper = OPTIM_WRAPPERS[optim]
    if optim_wrapper == 'amp':
        optim_wrapper = _amp_gc_optim_wrapper(model)
    return Runner(
        model=model,
        work_dir=str(work_dir),
        train_dataloader=dict(dataset=ToyDataset(), batch_size=4, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=optim_wrapper,
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        load_from=resume_from,
        resume=resume_from is not None,
        default_scope='mmengine',
        randomness=dict(seed=0),
        experiment_name=f'toy_{optim}_{max_iters}_{resume_from is not None}_{next(_RUNS)}',
    )


def final_state(runner):
    """What a resumed run must reproduce exactly: the weights and the optimizer's state."""
    optimizer = runner.optim_wrapper.state_dict()
    return dict(weights={k: v.clone() for k, v in runner.model.state_dict().items()},
                optimizer_state=optimizer['state'], loss_scaler=optimizer.get('loss_scaler'))


@pytest.fixture(scope='module')
def straight_runs(tmp_path_factory):
    """4 uninterrupted iterations with every optimizer (checkpoints at 2 and 4)."""
    runs = {}
    for optim in OPTIM_WRAPPERS:
        work_dir = tmp_path_factory.mktemp(f'straight_{optim}')
        runner = make_runner(work_dir, 4, optim=optim)
        runner.train()
        runs[optim] = work_dir, final_state(runner)
    return runs


@pytest.fixture(scope='module')
def trained(straight_runs):
    """The SGDGC run: its work dir and final weights."""
    work_dir, state = straight_runs['SGDGC']
    return work_dir, state['weights']


def test_mmengine_checkpoint_loads_in_safe_mode(trained):
    work_dir, _ = trained
    checkpoint = torch.load(work_dir / 'iter_4.pth', map_location='cpu')  # weights_only default
    assert checkpoint['meta']['iter'] == 4
    assert type(checkpoint['message_hub']['log_scalars']['train/loss']) is HistoryBuffer


def run_python(code, *args):
    """Runs ``code`` in a new Python process (nothing imported, nothing registered yet)."""
    return subprocess.run([sys.executable, '-c', code, *map(str, args)], capture_output=True,
                          text=True, cwd=REPO)


def test_without_mmgc_the_same_checkpoint_is_refused(trained):
    """Shows that the allow-list above is what makes the difference."""
    work_dir, _ = trained
    code = ('import pickle, torch\n'
            f'try:\n    torch.load({str(work_dir / "iter_4.pth")!r}, map_location="cpu")\n'
            'except pickle.UnpicklingError as e:\n    print("refused")\n')
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert 'refused' in out.stdout


def test_a_fresh_process_loads_it_after_import_mmgc(trained):
    """In a new process HistoryBuffer has registered no statistics yet (none was made)."""
    work_dir, _ = trained
    code = ('import torch, mmgc\n'
            f'checkpoint = torch.load({str(work_dir / "iter_4.pth")!r}, map_location="cpu")\n'
            'print("loaded", checkpoint["meta"]["iter"])\n')
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert 'loaded 4' in out.stdout


def test_resume_continues_to_the_same_weights(trained, tmp_path):
    work_dir, straight = trained
    resumed = make_runner(tmp_path, 4, resume_from=str(work_dir / 'iter_2.pth'))
    resumed.train()
    assert resumed.iter == 4
    for key, value in resumed.model.state_dict().items():
        assert torch.equal(value, straight[key]), key


def pickle_globals(path):
    """The GLOBAL names in a torch checkpoint's pickle ('module name'), read, not run."""
    with zipfile.ZipFile(path) as zf:
        data = zf.read(next(n for n in zf.namelist() if n.endswith('/data.pkl')))
    return {arg for op, arg, _ in pickletools.genops(data) if op.name == 'GLOBAL'}


def test_what_mmengine_puts_into_a_checkpoint(trained):
    """The names mmengine's Runner writes besides torch's own: exactly what mmgc handles (a
    new one here would load as refused; this test says which)."""
    work_dir, _ = trained
    names = pickle_globals(work_dir / 'iter_4.pth')
    assert {n for n in names if not n.startswith(('torch', 'collections', '_codecs'))} == {
        'mmengine.logging.history_buffer HistoryBuffer', '__builtin__ getattr',
        'numpy dtype', 'numpy ndarray', 'numpy.core.multiarray _reconstruct',
        'numpy.core.multiarray scalar'}
    assert torch.serialization.get_unsafe_globals_in_checkpoint(work_dir / 'iter_4.pth') == []


# Runs in a fresh process: resumes each optimizer's run from its iteration-2 checkpoint, and
# inspects what safe loading gives back and what a re-save of it holds.
RESUME_CODE = '''
import json, sys, numpy as np, torch
from mmengine.logging import HistoryBuffer
from tests.test_utils.test_checkpoint import make_runner, final_state, pickle_globals
jobs, out = json.loads(sys.argv[1]), sys.argv[2]
report = dict(statistics_before=sorted(HistoryBuffer._statistics_methods))
torch.load(jobs[0][1] + '/iter_4.pth', map_location='cpu')  # before any buffer exists here
report['statistics_after'] = sorted(HistoryBuffer._statistics_methods)
for optim, straight_dir, work_dir in jobs:
    checkpoint = torch.load(straight_dir + '/iter_4.pth', map_location='cpu')
    buffers = list(checkpoint['message_hub']['log_scalars'].values())
    scalars = [v for v in checkpoint['message_hub']['runtime_info'].values()
               if isinstance(v, np.generic)]
    torch.save(checkpoint, work_dir + '/resaved.pth')
    again = torch.load(work_dir + '/resaved.pth', map_location='cpu')
    runner = make_runner(work_dir, 4, resume_from=straight_dir + '/iter_2.pth', optim=optim)
    runner.train()
    torch.save(final_state(runner), work_dir + '/final.pth')
    report[optim] = dict(
        buffer_types=sorted({type(b).__module__ + '.' + type(b).__qualname__ for b in buffers}),
        array_types=sorted({type(a).__module__ + '.' + type(a).__qualname__
                            for b in buffers for a in (b._log_history, b._count_history)}),
        buffer_means={k: float(b.mean()) for k, b in
                      checkpoint['message_hub']['log_scalars'].items()},
        scalars=[[type(s).__module__ + '.' + type(s).__qualname__, s.dtype.str, s.item()]
                 for s in scalars],
        resaved_globals=sorted(pickle_globals(work_dir + '/resaved.pth')),
        resaved_loads=again['meta']['iter'] == 4,
        iter=runner.iter)
json.dump(report, open(out, 'w'))
'''


@pytest.fixture(scope='module')
def resumed_in_a_fresh_process(straight_runs, tmp_path_factory):
    jobs = []
    for optim, (straight_dir, _) in straight_runs.items():
        jobs.append([optim, str(straight_dir), str(tmp_path_factory.mktemp(f'resumed_{optim}'))])
    out = tmp_path_factory.mktemp('report') / 'report.json'
    proc = run_python(RESUME_CODE, json.dumps(jobs), out)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {job[0]: Path(job[2]) for job in jobs}, json.loads(out.read_text())


def test_the_fresh_process_loaded_before_any_statistics_were_registered(
        resumed_in_a_fresh_process):
    """HistoryBuffer registers its statistics when a first buffer is made; the first load in
    that process found none and registered them itself."""
    report = resumed_in_a_fresh_process[1]
    assert report['statistics_before'] == []
    assert report['statistics_after'] == sorted(['min', 'max', 'current', 'mean'])


@pytest.mark.parametrize('optim', list(OPTIM_WRAPPERS))
def test_every_optimizer_resumes_in_a_fresh_process_to_the_same_state(
        straight_runs, resumed_in_a_fresh_process, optim):
    work_dirs, report = resumed_in_a_fresh_process
    assert report[optim]['iter'] == 4
    straight = straight_runs[optim][1]
    resumed = torch.load(work_dirs[optim] / 'final.pth', map_location='cpu')
    assert resumed['weights'].keys() == straight['weights'].keys()
    for key, value in resumed['weights'].items():
        assert torch.equal(value, straight['weights'][key]), key
    assert resumed['optimizer_state'].keys() == straight['optimizer_state'].keys()
    for index, state in resumed['optimizer_state'].items():
        assert state.keys() == straight['optimizer_state'][index].keys()
        for name, value in state.items():
            expected = straight['optimizer_state'][index][name]
            if value is None or expected is None:
                assert value is expected, (index, name)
            else:
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(expected)), (index,
                                                                                       name)
    assert resumed['loss_scaler'] == straight['loss_scaler']
    if optim.startswith('Amp'):  # the scaler's state really went through the checkpoint
        assert resumed['loss_scaler']['scale'] > 1024.0  # grown every 2 steps without inf


@pytest.mark.parametrize('optim', list(OPTIM_WRAPPERS))
def test_loaded_checkpoint_holds_mmengine_and_numpy_types(straight_runs,
                                                          resumed_in_a_fresh_process, optim):
    report = resumed_in_a_fresh_process[1][optim]
    assert report['buffer_types'] == ['mmengine.logging.history_buffer.HistoryBuffer']
    assert report['array_types'] == ['numpy.ndarray']
    assert report['scalars'] and all(
        t == 'numpy.float64' and dtype == '<f8' for t, dtype, _ in report['scalars'])
    # The statistics of the loaded buffers are those of the run that wrote them.
    checkpoint = torch.load(straight_runs[optim][0] / 'iter_4.pth', map_location='cpu')
    for key, buffer in checkpoint['message_hub']['log_scalars'].items():
        assert report['buffer_means'][key] == pytest.approx(float(buffer.mean()), abs=0)


@pytest.mark.parametrize('optim', list(OPTIM_WRAPPERS))
def test_a_loaded_checkpoint_resaves_without_mmgc_names(resumed_in_a_fresh_process, optim):
    report = resumed_in_a_fresh_process[1][optim]
    assert report['resaved_loads']
    assert not [n for n in report['resaved_globals'] if 'mmgc' in n]
    assert 'numpy.core.multiarray _reconstruct' in report['resaved_globals']  # arrays kept


def test_a_resaved_checkpoint_needs_no_mmgc_to_load(resumed_in_a_fresh_process):
    """Unsafe loading of the re-saved file in a process that never imports mmgc: nothing in it
    refers to mmgc."""
    path = resumed_in_a_fresh_process[0]['SGDGC'] / 'resaved.pth'
    code = ('import sys, torch\n'
            'checkpoint = torch.load(sys.argv[1], map_location="cpu", weights_only=False)\n'
            'buffer = checkpoint["message_hub"]["log_scalars"]["train/loss"]\n'
            'print(type(buffer).__name__, type(buffer._log_history).__name__,\n'
            '      sorted(m for m in sys.modules if m.startswith("mmgc")))\n')
    out = run_python(code, path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ['HistoryBuffer', 'ndarray', '[]']


def test_grad_scaler_state_round_trips_in_safe_mode(tmp_path):
    """An AMP wrapper's state dict (optimizer + CPU GradScaler) through torch.save and the
    safe torch.load."""
    model = ToyModel()
    wrapper = _amp_gc_optim_wrapper(model)
    inputs = torch.randn(4, 2, 5, 5)
    for _ in range(3):
        with wrapper.optim_context(model):
            loss = model(inputs).pow(2).mean()
        wrapper.update_params(loss)
    state = wrapper.state_dict()
    torch.save(state, tmp_path / 'amp.pth')
    loaded = torch.load(tmp_path / 'amp.pth')
    assert loaded['loss_scaler'] == state['loss_scaler']
    assert loaded['loss_scaler']['scale'] == 2048.0  # grew once after 2 finite steps
    other = _amp_gc_optim_wrapper(ToyModel())
    other.load_state_dict(loaded)
    assert other.loss_scaler.get_scale() == 2048.0


class RunsACommand:

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


class GetsAnAttribute:

    def __init__(self, owner, name):
        self.owner, self.name = owner, name

    def __reduce__(self):
        return (getattr, (self.owner, self.name))


def test_checkpoint_running_a_command_is_refused(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'meta': RunsACommand(marker)}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)
    assert not marker.exists()


@pytest.mark.parametrize('owner,name', [(HistoryBuffer, '__init__'), (np.ndarray, 'tofile'),
                                        (HistoryBuffer, 'register_statistics')])
def test_getattr_is_allowed_only_for_history_buffer_statistics(tmp_path, owner, name):
    path = tmp_path / 'evil.pth'
    torch.save({'meta': GetsAnAttribute(owner, name)}, path)
    with pytest.raises(pickle.UnpicklingError, match=f"mmgc: refused getattr\\(.*'{name}'\\)"):
        torch.load(path)
    ok = tmp_path / 'ok.pth'
    torch.save({'meta': GetsAnAttribute(HistoryBuffer, 'mean')}, ok)
    assert torch.load(ok)['meta'] is HistoryBuffer.mean


def test_numpy_values_outside_a_history_buffer_load_and_resave_as_numpy(tmp_path):
    """Arrays, scalars and dtypes anywhere in a checkpoint (an empty HistoryBuffer too): checked,
    equal to what was saved, and saved again under numpy's own names."""
    saved = {'array': np.arange(6, dtype=np.int32).reshape(2, 3), 'bools': np.array([True, False]),
             'fortran': np.asfortranarray(np.ones((2, 3))), 'big': np.arange(3, dtype='>f4'),
             'scalar': np.float32(2.5), 'complex': np.complex128(1 - 2j), 'dtype': np.dtype('u2'),
             'empty': np.zeros((0, 4)), 'buffer': HistoryBuffer()}
    torch.save(saved, tmp_path / 'numpy.pth')
    loaded = torch.load(tmp_path / 'numpy.pth')
    assert type(loaded['buffer']) is HistoryBuffer
    assert type(loaded['buffer']._log_history) is np.ndarray
    assert loaded['buffer']._log_history.shape == (0, )
    for key in ('array', 'bools', 'fortran', 'big', 'empty'):
        assert isinstance(loaded[key], np.ndarray)
        np.testing.assert_array_equal(loaded[key], saved[key])
        assert loaded[key].dtype == saved[key].dtype.newbyteorder('=')
    assert loaded['fortran'].flags.f_contiguous
    assert type(loaded['scalar']) is np.float32 and loaded['scalar'] == 2.5
    assert type(loaded['complex']) is np.complex128 and loaded['complex'] == 1 - 2j
    assert np.dtype(loaded['dtype']) == np.dtype('u2')
    torch.save(loaded, tmp_path / 'again.pth')
    assert not [n for n in pickle_globals(tmp_path / 'again.pth') if 'mmgc' in n]
    again = torch.load(tmp_path / 'again.pth')
    np.testing.assert_array_equal(again['array'], saved['array'])
    assert np.dtype(again['dtype']) == np.dtype('u2')


def test_import_mmgc_needs_only_torch_and_mmengine():
    code = ('import sys, mmgc\n'
            'heavy = [m for m in sys.modules if m.split(".")[0] in '
            '("mmdet", "mmpretrain", "mmcv", "mmseg")]\n'
            'print(heavy)\n')
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '[]'
