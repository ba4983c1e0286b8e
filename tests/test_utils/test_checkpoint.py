"""Safe loading of mmengine checkpoints (torch >= 2.6 weights_only) after ``import mmgc``."""
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner import Runner

import mmgc  # noqa: F401

from .toy import ToyDataset, ToyModel

REPO = Path(__file__).resolve().parents[2]


def make_runner(work_dir, max_iters, resume_from=None):
    torch.manual_seed(0)
    return Runner(
        model=ToyModel(),
        work_dir=str(work_dir),
        train_dataloader=dict(dataset=ToyDataset(), batch_size=4, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=dict(optimizer=dict(type='SGDGC', lr=0.05, momentum=0.9,
                                          weight_decay=1e-4)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        load_from=resume_from,
        resume=resume_from is not None,
        default_scope='mmengine',
        randomness=dict(seed=0),
        experiment_name=f'toy_{max_iters}_{resume_from is not None}',
    )


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('straight')
    runner = make_runner(work_dir, 4)
    runner.train()
    return work_dir, {k: v.clone() for k, v in runner.model.state_dict().items()}


def test_mmengine_checkpoint_loads_in_safe_mode(trained):
    work_dir, _ = trained
    checkpoint = torch.load(work_dir / 'iter_4.pth', map_location='cpu')  # weights_only default
    assert checkpoint['meta']['iter'] == 4
    assert isinstance(checkpoint['message_hub']['log_scalars']['train/loss'], HistoryBuffer)


def run_python(code):
    """Runs ``code`` in a new Python process (nothing imported, nothing registered yet)."""
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO)


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
    with pytest.raises(pickle.UnpicklingError, match='not allowed'):
        torch.load(path)
    ok = tmp_path / 'ok.pth'
    torch.save({'meta': GetsAnAttribute(HistoryBuffer, 'mean')}, ok)
    assert torch.load(ok)['meta'] == HistoryBuffer.mean


def test_import_mmgc_needs_only_torch_and_mmengine():
    code = ('import sys, mmgc\n'
            'heavy = [m for m in sys.modules if m.split(".")[0] in '
            '("mmdet", "mmpretrain", "mmcv", "mmseg")]\n'
            'print(heavy)\n')
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '[]'
