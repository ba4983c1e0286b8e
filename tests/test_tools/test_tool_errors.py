"""tools/train.py and tools/test.py stop with one error line where a run cannot work.

Each case runs the tool as a real subprocess and expects exit status 2, and on stderr exactly one
line, ``<tool>: error: ...`` (nothing on stdout, no traceback), that names the file at fault and
says what writes it; never torch's advice to load with ``weights_only=False``. The cases fail
before the Runner is built, so each takes seconds: a checkpoint to resume from or to evaluate
that is missing, truncated, garbage or refused by the safe loader (also as the work dir's
``last_checkpoint``); a missing data root or annotation file; mmdet missing; a second training
into a work dir that a running training uses. In-process tests cover the checks' corner cases.
"""
import os
import pickle
import random
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.registry import DATASETS, HOOKS, MODELS

from mmgc.utils import (RunCheckError, check_datasets, check_last_checkpoint,
                        checkpoint_problem, lock_work_dir, run_dataloaders)
from mmgc.utils.run_checks import WORK_DIR_LOCK, _refusal_reason

from ..test_utils.crafted import marker_for, write_case
from ..test_utils.toy import ToyDataset, ToyModel
from .test_tools import DEMO, PYTHON, REPO, TOOLS, data_root, run, subprocess_env, write_config

__all__ = ['data_root']  # the synthetic dataset fixture of test_tools, shared

# --- what the toy training processes import (custom_imports of the toy config) ------------------

MODELS.register_module('MmgcErrorsToyModel', module=ToyModel, force=True)
DATASETS.register_module('MmgcErrorsToyDataset', module=ToyDataset, force=True)


@HOOKS.register_module(force=True)
class MmgcWaitHook(Hook):
    """Holds a training in ``before_train`` (the work dir locked, the Runner built) for
    ``seconds``, after writing the file ``started``."""

    def __init__(self, started: str, seconds: float = 300):
        self.started, self.seconds = started, seconds

    def before_train(self, runner):
        Path(self.started).write_text(str(os.getpid()))
        time.sleep(self.seconds)


# --- helpers ------------------------------------------------------------------------------------

WEIGHTS_ONLY_FALSE = re.compile(r'weights_only\W*(set to\W*)?False', re.I)


def one_error_line(proc: subprocess.CompletedProcess, tool: str, *named) -> str:
    """Asserts the one-line failure; returns the line."""
    both = proc.stdout + proc.stderr
    assert proc.returncode == 2, f'exit status {proc.returncode}:\n{both[-4000:]}'
    assert 'Traceback' not in both, both[-4000:]
    assert not WEIGHTS_ONLY_FALSE.search(both), both[-4000:]
    assert proc.stdout == '', proc.stdout[-2000:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), proc.stderr[-4000:]
    line = lines[0]
    assert line.startswith(f'{tool}: error: '), line
    for part in named:
        assert str(part) in line, (part, line)
    return line


def toy_config_text(max_iters: int, extra: str = '') -> str:
    return f"""
custom_imports = dict(imports=['mmgc', 'tests.test_tools.test_tool_errors'],
                      allow_failed_imports=False)
model = dict(type='MmgcErrorsToyModel')
train_dataloader = dict(dataset=dict(type='MmgcErrorsToyDataset'), batch_size=4, num_workers=0,
                        sampler=dict(type='DefaultSampler', shuffle=False),
                        collate_fn=dict(type='default_collate'))
train_cfg = dict(by_epoch=False, max_iters={max_iters})
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, by_epoch=False),
                     logger=dict(type='LoggerHook', interval=1))
{extra}
"""


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def detector_config(data_root, tmp_path_factory):
    """A tiny-run Faster R-CNN GC config on the synthetic dataset (built by no test here: every
    case stops before the Runner)."""
    return write_config(tmp_path_factory.mktemp('configs') / 'faster_gc_tiny.py',
                        DEMO / 'faster-rcnn_r18_fpn_gc_synthetic.py', data_root, max_epochs=1)


@pytest.fixture(scope='module')
def toy_config(tmp_path_factory):
    path = tmp_path_factory.mktemp('toy') / 'toy.py'
    path.write_text(toy_config_text(max_iters=2))
    return path


@pytest.fixture(scope='module')
def toy_checkpoint(toy_config, tmp_path_factory):
    """A real checkpoint: 2 iterations of the toy model trained by tools/train.py."""
    work_dir = tmp_path_factory.mktemp('toy_run')
    run([PYTHON, TOOLS / 'train.py', toy_config, '--work-dir', work_dir])
    assert (work_dir / 'last_checkpoint').read_text().strip() == str(work_dir / 'iter_2.pth')
    return work_dir / 'iter_2.pth'


def write_defect(defect: str, path: Path, real: Path) -> Path:
    """A checkpoint at ``path`` that does not load: ``missing`` (none), ``truncated`` (the first
    half of a real one), ``garbage`` (random bytes), ``refused`` (calls ``os.system`` to touch
    ``marker_for(path)`` if unpickled unsafely: torch's safe loader refuses it), ``mmgc_refused``
    (an object array from raw bytes, which mmgc's allow-list refuses)."""
    if defect == 'truncated':
        data = real.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    elif defect == 'garbage':
        path.write_bytes(random.Random(0).randbytes(64 * 1024))
    elif defect == 'refused':
        write_case('os_system', path)
    elif defect == 'mmgc_refused':
        write_case('object_array_flags_reset', path)
    else:
        assert defect == 'missing'
    return path


EXPECTED = {  # what the line says about each defect
    'missing': 'does not exist',
    'truncated': 'is truncated or damaged (PytorchStreamReader failed reading zip archive: '
                 'failed finding central directory)',
    'garbage': 'is not a torch checkpoint',
    'refused': "is refused by torch's safe loading: Trying to load unsupported GLOBAL os.system",
    'mmgc_refused': "is refused by torch's safe loading: mmgc: refused ",
}

# --- checkpoints --------------------------------------------------------------------------------


@pytest.mark.parametrize('defect', list(EXPECTED))
def test_train_resume_from_a_bad_checkpoint(defect, detector_config, toy_checkpoint, tmp_path):
    """``--resume PATH``: the file is checked before anything is made."""
    ckpt = write_defect(defect, tmp_path / 'epoch_1.pth', toy_checkpoint)
    work_dir = tmp_path / 'work'
    proc = run([PYTHON, TOOLS / 'train.py', detector_config, '--work-dir', work_dir,
                '--resume', ckpt], check=False)
    line = one_error_line(proc, 'train.py', f'--resume: checkpoint {ckpt} ', EXPECTED[defect])
    if defect == 'missing':
        assert 'tools/train.py CONFIG writes epoch_N.pth' in line and 'last_checkpoint' in line
    if 'refused' in defect:
        assert 'do not load it' in line
    assert not marker_for(ckpt).exists()
    assert not work_dir.exists()  # stopped before anything was made


@pytest.mark.parametrize('defect', ['missing', 'truncated', 'garbage', 'mmgc_refused'])
def test_train_auto_resume_from_a_bad_last_checkpoint(defect, detector_config, toy_checkpoint,
                                                      tmp_path):
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    ckpt = write_defect(defect, work_dir / 'epoch_1.pth', toy_checkpoint)
    (work_dir / 'last_checkpoint').write_text(str(ckpt))
    proc = run([PYTHON, TOOLS / 'train.py', detector_config, '--work-dir', work_dir, '--resume'],
               check=False)
    line = one_error_line(proc, 'train.py',
                          f'--resume: {work_dir / "last_checkpoint"} names the checkpoint {ckpt}',
                          EXPECTED[defect])
    if 'refused' not in defect:
        assert 'pass --resume CHECKPOINT' in line
    assert sorted(p.name for p in work_dir.iterdir()) == sorted(
        ['last_checkpoint', WORK_DIR_LOCK] + (['epoch_1.pth'] if defect != 'missing' else []))


@pytest.mark.parametrize('defect', ['missing', 'truncated', 'garbage', 'refused'])
def test_test_py_with_a_bad_checkpoint(defect, detector_config, toy_checkpoint, tmp_path):
    ckpt = write_defect(defect, tmp_path / 'epoch_12.pth', toy_checkpoint)
    proc = run([PYTHON, TOOLS / 'test.py', detector_config, ckpt, '--work-dir',
                tmp_path / 'work'], check=False)
    line = one_error_line(proc, 'test.py', f'checkpoint {ckpt} ', EXPECTED[defect])
    if defect == 'missing':
        assert 'tools/train.py CONFIG writes epoch_N.pth' in line
    assert not marker_for(ckpt).exists()
    assert not (tmp_path / 'work').exists()


# --- datasets -----------------------------------------------------------------------------------


def test_train_without_the_data_root(tmp_path):
    missing = tmp_path / 'synthetic_coco'
    config = write_config(tmp_path / 'cfg.py', DEMO / 'faster-rcnn_r18_fpn_synthetic.py', missing,
                          max_epochs=1)
    proc = run([PYTHON, TOOLS / 'train.py', config, '--work-dir', tmp_path / 'work'], check=False)
    one_error_line(proc, 'train.py', f'train_dataloader: data root {missing}/ ',
                   'train_dataloader.dataset.data_root',
                   f'python tools/dataset_converters/synthetic_coco.py {missing}')
    assert not (tmp_path / 'work').exists()


def test_train_without_the_val_annotation_file(data_root, tmp_path):
    """The training set is there, the validation annotations are not."""
    root = tmp_path / 'synthetic_coco'
    root.mkdir()
    for part in ('train', 'val'):
        os.symlink(Path(data_root) / part, root / part)
    (root / 'annotations').mkdir()
    os.symlink(Path(data_root) / 'annotations' / 'instances_train.json',
               root / 'annotations' / 'instances_train.json')
    config = write_config(tmp_path / 'cfg.py', DEMO / 'faster-rcnn_r18_fpn_synthetic.py', root,
                          max_epochs=1)
    proc = run([PYTHON, TOOLS / 'train.py', config, '--work-dir', tmp_path / 'work'], check=False)
    one_error_line(proc, 'train.py',
                   f'val_dataloader: annotation file {root}/annotations/instances_val.json ',
                   'val_dataloader.dataset.ann_file', 'synthetic_coco.py')


def test_test_py_without_the_annotation_file(detector_config, toy_checkpoint, tmp_path):
    """COCO's layout as the real configs expect it, relative to the directory of the run."""
    proc = run([PYTHON, TOOLS / 'test.py', detector_config, toy_checkpoint, '--work-dir',
                tmp_path / 'work', '--cfg-options', f'test_dataloader.dataset.data_root={tmp_path}',
                'test_dataloader.dataset.ann_file=coco/annotations/instances_val2017.json'],
               check=False)
    one_error_line(proc, 'test.py', 'test_dataloader: annotation file '
                   f'{tmp_path}/coco/annotations/instances_val2017.json ', 'configs/README.md')


# --- mmdet --------------------------------------------------------------------------------------


@pytest.fixture
def without_mmdet(tmp_path):
    """PYTHONPATH for a process in which ``import mmdet`` finds nothing (a meta path finder
    that refuses it, as Python does for a package that is not installed)."""
    (tmp_path / 'sitecustomize.py').write_text(
        'import sys\n\n\n'
        'class NoMmdet:\n'
        '    def find_spec(self, name, path=None, target=None):\n'
        "        if name == 'mmdet' or name.startswith('mmdet.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n\n\n"
        'sys.meta_path.insert(0, NoMmdet())\n')
    return os.pathsep.join([str(tmp_path), subprocess_env()['PYTHONPATH']])


@pytest.mark.parametrize('tool', ['train.py', 'test.py'])
def test_without_mmdet(tool, without_mmdet, detector_config, tmp_path):
    args = [detector_config] + (['epoch_1.pth'] if tool == 'test.py' else [])
    proc = run([PYTHON, TOOLS / tool, *args, '--work-dir', tmp_path / 'work'], check=False,
               PYTHONPATH=without_mmdet)
    one_error_line(proc, tool, 'mmdet is not installed: pip install -e ".[detection]"')


def test_with_a_broken_mmdet(detector_config, tmp_path):
    """mmdet is found but its import fails (here: mmcv missing)."""
    (tmp_path / 'mmdet').mkdir()
    (tmp_path / 'mmdet' / '__init__.py').write_text(
        "raise ModuleNotFoundError(\"No module named 'mmcv'\", name='mmcv')\n")
    proc = run([PYTHON, TOOLS / 'train.py', detector_config, '--work-dir', tmp_path / 'work'],
               check=False,
               PYTHONPATH=os.pathsep.join([str(tmp_path), subprocess_env()['PYTHONPATH']]))
    one_error_line(proc, 'train.py', 'mmdet is installed but cannot be imported '
                   "(ModuleNotFoundError: No module named 'mmcv')")


# --- one training per work dir ------------------------------------------------------------------


def test_second_training_into_a_busy_work_dir(toy_config, toy_checkpoint, tmp_path):
    """A training holds its work dir (it waits in before_train); a second one into it stops at
    once with the first's PID and host while the first keeps running; after the first is killed
    (SIGKILL: no clean-up) a new training into the work dir runs and auto-resumes."""
    work_dir = tmp_path / 'work'
    started = tmp_path / 'started'
    waiting = tmp_path / 'waiting.py'
    waiting.write_text(toy_config_text(
        max_iters=2, extra=f'custom_hooks = [dict(type="MmgcWaitHook", started={str(started)!r})]'))
    with open(tmp_path / 'first.log', 'w') as log:
        first = subprocess.Popen([PYTHON, TOOLS / 'train.py', waiting, '--work-dir', work_dir],
                                 cwd=REPO, env=subprocess_env(), stdout=log,
                                 stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not started.exists():
            assert first.poll() is None, (tmp_path / 'first.log').read_text()[-4000:]
            assert time.monotonic() < deadline, 'the first training did not start'
            time.sleep(0.2)
        proc = run([PYTHON, TOOLS / 'train.py', toy_config, '--work-dir', work_dir],
                   check=False)
        one_error_line(proc, 'train.py', f'work dir {work_dir} is in use by another training',
                       f'PID {first.pid} on host {socket.gethostname()}',
                       'wait until it ends, or pass --work-dir')
        assert first.poll() is None  # the first was not disturbed
        assert not list(work_dir.glob('*.pth'))
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(60)
    # A new training: the killed one left no lock. A checkpoint from elsewhere to auto-resume
    # from (a real one passes the check): 2 iterations done, 1 to go.
    (work_dir / 'iter_2.pth').write_bytes(toy_checkpoint.read_bytes())
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_2.pth'))
    run([PYTHON, TOOLS / 'train.py', toy_config, '--work-dir', work_dir, '--resume',
         '--cfg-options', 'train_cfg.max_iters=3'])
    assert (work_dir / 'iter_3.pth').is_file() and not (work_dir / 'iter_1.pth').exists()
    assert (work_dir / WORK_DIR_LOCK).read_text() == ''  # released at the end


# --- the checks in-process: corner cases --------------------------------------------------------


def test_a_real_checkpoint_passes(toy_checkpoint):
    assert checkpoint_problem(str(toy_checkpoint)) is None


@pytest.mark.filterwarnings('ignore:`torch.jit', 'ignore:Detected pickle protocol')
def test_legacy_format_and_odd_files(toy_checkpoint, tmp_path):
    legacy = tmp_path / 'legacy.pth'
    checkpoint = torch.load(toy_checkpoint)
    torch.save(checkpoint, legacy, _use_new_zipfile_serialization=False)
    assert checkpoint_problem(str(legacy)) is None
    # torch's safe unpickler reads protocol 2 only: the check fails where mmengine's load would.
    torch.save(checkpoint, tmp_path / 'legacy4.pth', _use_new_zipfile_serialization=False,
               pickle_protocol=4)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / 'legacy4.pth')
    assert checkpoint_problem(str(tmp_path / 'legacy4.pth')) == (
        'unreadable', 'is damaged, or pickled otherwise than torch.save does '
        '(Unsupported operand 149)')
    (tmp_path / 'empty.pth').write_bytes(b'')
    assert checkpoint_problem(str(tmp_path / 'empty.pth')) == ('unreadable', 'is empty (0 bytes)')
    assert checkpoint_problem(str(tmp_path))[1] == 'is a directory, not a checkpoint file'
    data = legacy.read_bytes()
    for end in range(1, len(data), 97):  # cut anywhere, it never passes
        (tmp_path / 'cut.pth').write_bytes(data[:end])
        assert checkpoint_problem(str(tmp_path / 'cut.pth')) is not None, end
    (tmp_path / 'cut.pth').write_bytes(data[:-8])  # in the tensor data
    assert checkpoint_problem(str(tmp_path / 'cut.pth'))[1].startswith('is truncated or damaged')
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / 'script.pt')
    assert checkpoint_problem(str(tmp_path / 'script.pt')) == (
        'unreadable', 'is a TorchScript archive (torch.jit.save), not a checkpoint')


def wrapped_as_torch_does(reason: str) -> pickle.UnpicklingError:
    """What torch.load raises for a refusal of its safe unpickler (torch 2.6 to 2.14's texts)."""
    try:
        try:
            raise pickle.UnpicklingError(reason)
        except pickle.UnpicklingError as error:
            raise pickle.UnpicklingError(
                'Weights only load failed. In PyTorch 2.6, we changed the default value of the '
                '`weights_only` argument in `torch.load` from `False` to `True`. Re-running '
                '`torch.load` with `weights_only` set to `False` will likely succeed, but it can '
                'result in arbitrary code execution. Do it only if you got the file from a '
                f'trusted source.\n\tWeightsUnpickler error: {error}\n\nCheck the documentation '
                'of torch.load to learn more') from None
    except pickle.UnpicklingError as error:
        return error


@pytest.mark.parametrize('context', [True, False])
def test_refusal_reasons(context):
    """The reason alone, from the unpickler's own error or else from torch's text."""
    def refusal(reason):
        error = wrapped_as_torch_does(reason)
        if not context:
            error.__context__ = None
        return _refusal_reason(error)

    mmgc_reason = "mmgc: getattr(numpy.ndarray, 'tofile') is not allowed in a checkpoint"
    assert refusal(mmgc_reason) == mmgc_reason
    assert refusal('Unsupported global: GLOBAL posix.system was not an allowed global by '
                   'default. Please use `torch.serialization.add_safe_globals([system])` or the '
                   '`torch.serialization.safe_globals([system])` context manager to allowlist '
                   'this global if you trust this class/function.') == \
        'Unsupported global: GLOBAL posix.system was not an allowed global by default'
    assert refusal('Unsupported operand 161') == 'Unsupported operand 161'
    assert not WEIGHTS_ONLY_FALSE.search(refusal('Load it with weights_only=False.'))


def test_auto_resume_without_last_checkpoint_is_not_checked(tmp_path):
    """mmengine then trains from scratch (mmdet's behaviour); an empty record is an error."""
    cfg = dict(resume=True, load_from=None, work_dir=str(tmp_path))
    check_last_checkpoint(cfg)
    (tmp_path / 'last_checkpoint').write_text('\n')
    with pytest.raises(RunCheckError, match='last_checkpoint is empty'):
        check_last_checkpoint(cfg)
    check_last_checkpoint(dict(cfg, resume=False))


def loader(dataset, **extra):
    return dict(batch_size=2, dataset=dataset, **extra)


def test_datasets_in_wrappers(tmp_path):
    (tmp_path / 'a' / 'ann').mkdir(parents=True)
    (tmp_path / 'a' / 'ann' / 'train.json').write_text('{}')
    good = dict(type='CocoDataset', data_root=str(tmp_path / 'a'), ann_file='ann/train.json')
    missing = dict(type='CocoDataset', data_root=str(tmp_path / 'b'), ann_file='ann/train.json')
    wrapped = dict(type='RepeatDataset', times=2,
                   dataset=dict(type='ConcatDataset', datasets=[good, missing]))
    with pytest.raises(RunCheckError) as error:
        check_datasets(dict(train_dataloader=loader(wrapped)), ['train_dataloader'])
    assert str(error.value).startswith(f'train_dataloader: data root {tmp_path / "b"} '
                                       '(train_dataloader.dataset.dataset.datasets.1.data_root)')
    check_datasets(dict(train_dataloader=loader(dict(wrapped, dataset=good))),
                   ['train_dataloader'])


def test_pretrained_checkpoints(tmp_path):
    """init_cfg=dict(type='Pretrained') checkpoints anywhere in the model (a list of init_cfgs
    too): a missing or refused local file is one line naming its config key; zoo names and URLs
    pass; a good file passes."""
    from mmgc.utils import check_pretrained
    good = tmp_path / 'good.pth'
    torch.save(dict(state_dict={'backbone.w': torch.ones(2)}), good)
    missing = tmp_path / 'work_dirs' / 'demo' / 'pretrain' / 'pretrained.pth'
    model = dict(type='X', backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=str(good))),
                 head=dict(init_cfg=[dict(type='Normal'),
                                     dict(type='Pretrained', checkpoint='torchvision://r50')]))
    check_pretrained(dict(model=model))
    model['neck'] = dict(init_cfg=[dict(type='Pretrained', checkpoint=str(missing),
                                        prefix='backbone.')])
    with pytest.raises(RunCheckError) as error:
        check_pretrained(dict(model=model))
    assert str(error.value) == (
        f'model.neck.init_cfg.0.checkpoint: checkpoint {missing} does not exist; python '
        'tools/misc/gc_demo.py writes it (its pretraining step), or set '
        'model.neck.init_cfg.0.checkpoint (--cfg-options model.neck.init_cfg.0.checkpoint=PATH), '
        'or start from random weights with model.neck.init_cfg.0=None')
    evil = tmp_path / 'evil.pth'
    write_case('os_system', evil)
    model['neck'] = dict(init_cfg=dict(type='Pretrained', checkpoint=str(evil)))
    with pytest.raises(RunCheckError) as error:
        check_pretrained(dict(model=model))
    assert 'refused' in str(error.value) and not WEIGHTS_ONLY_FALSE.search(str(error.value))
    assert not marker_for(evil).exists()


def test_train_py_missing_pretrained_backbone_is_one_line(tmp_path):
    """The demo detector without its pretraining cache: one line saying what writes it."""
    missing = tmp_path / 'nowhere.pth'
    proc = run([PYTHON, TOOLS / 'train.py', DEMO / 'faster-rcnn_r18_fpn_synthetic.py',
                '--work-dir', tmp_path / 'work', '--cfg-options',
                f'model.backbone.init_cfg.checkpoint={missing}',
                f'train_dataloader.dataset.data_root={REPO}/tests/',
                'train_dataloader.dataset.ann_file=__init__.py', 'val_cfg=None'], check=False)
    one_error_line(proc, 'train.py', f'model.backbone.init_cfg.checkpoint: checkpoint {missing} '
                   'does not exist; put the file there')


@pytest.mark.parametrize('kind', ['CIFAR100', 'mmpretrain.CIFAR10', 'MNIST'])
def test_datasets_that_download_what_is_missing(tmp_path, kind):
    """mmpretrain's CIFAR / MNIST datasets fetch a missing data root (download=True by default):
    not an error, unless download=False."""
    missing = str(tmp_path / 'cifar100')
    check_datasets(dict(train_dataloader=loader(dict(type=kind, data_root=missing))),
                   ['train_dataloader'])
    with pytest.raises(RunCheckError) as error:
        check_datasets(dict(train_dataloader=loader(dict(type=kind, data_root=missing,
                                                         download=False))), ['train_dataloader'])
    assert str(error.value) == (
        f'train_dataloader: data root {missing} (train_dataloader.dataset.data_root) does not '
        f'exist; set download=True on the dataset, or put the CIFAR python files under {missing}: '
        'see configs/README.md')


def test_classification_data_hints(tmp_path):
    for root, hint in (('data/imagenet', 'ImageNet goes under data/imagenet/'),
                       ('data/CUB_200_2011', 'fine-grained datasets'),
                       ('data/stanford_dogs', 'fine-grained datasets')):
        with pytest.raises(RunCheckError) as error:
            check_datasets(dict(train_dataloader=loader(dict(type='CustomDataset',
                                                             data_root=str(tmp_path / root)))),
                           ['train_dataloader'])
        assert hint in str(error.value) and 'configs/README.md' in str(error.value)


def test_datasets_that_are_not_checked(tmp_path):
    """No ann_file (a folder dataset), URLs, another storage backend, built objects."""
    cfg = dict(
        train_dataloader=loader(dict(type='ImageNet', data_root=str(tmp_path))),
        val_dataloader=loader(dict(type='CocoDataset', data_root='s3://bucket/coco/',
                                   ann_file='annotations/val.json')),
        val_evaluator=dict(type='CocoMetric', ann_file='s3://bucket/coco/val.json'),
        test_dataloader=loader(dict(type='CocoDataset', data_root='data/nowhere/',
                                    ann_file='val.json', backend_args=dict(backend='petrel'))),
        test_evaluator=[dict(type='CocoMetric', ann_file=None)])
    check_datasets(cfg, ['train_dataloader', 'val_dataloader', 'test_dataloader'])
    check_datasets(dict(train_dataloader=loader(ToyDataset())), ['train_dataloader'])


def test_validation_off_is_not_checked(tmp_path):
    val = loader(dict(type='CocoDataset', data_root=str(tmp_path / 'none')))
    cfg = dict(train_dataloader=loader(dict(type='CocoDataset')), val_dataloader=val,
               val_cfg=dict(type='ValLoop'), val_evaluator=dict(type='CocoMetric'))
    assert run_dataloaders(cfg, 'train') == ['train_dataloader', 'val_dataloader']
    with pytest.raises(RunCheckError, match='^val_dataloader: data root'):
        check_datasets(cfg, run_dataloaders(cfg, 'train'))
    off = dict(cfg, val_cfg=None, val_dataloader=None, val_evaluator=None)
    assert run_dataloaders(off, 'train') == ['train_dataloader']
    assert run_dataloaders(cfg, 'test') == ['test_dataloader']


def test_evaluator_annotation_file(tmp_path):
    cfg = dict(test_dataloader=loader(dict(type='CocoDataset')),
               test_evaluator=dict(type='CocoMetric', ann_file=str(tmp_path / 'val.json')))
    with pytest.raises(RunCheckError, match=r'^test_evaluator: annotation file .*val\.json '
                       r'\(test_evaluator.ann_file\) does not exist'):
        check_datasets(cfg, ['test_dataloader'])


def test_other_ranks_do_not_lock(tmp_path, monkeypatch):
    """Rank 0 of a run holds the lock; its other ranks pass; a second rank 0 is refused; the
    lock goes with release()."""
    monkeypatch.setenv('RANK', '0')
    held = lock_work_dir(str(tmp_path), 'pytorch')
    assert held.held
    monkeypatch.setenv('RANK', '1')
    assert not lock_work_dir(str(tmp_path), 'pytorch').held
    monkeypatch.setenv('SLURM_PROCID', '3')
    assert not lock_work_dir(str(tmp_path), 'slurm').held
    with pytest.raises(RunCheckError, match=f'PID {os.getpid()} on host'):
        lock_work_dir(str(tmp_path), 'none')
    held.release()
    with lock_work_dir(str(tmp_path), 'none') as again:
        assert again.held
    assert not again.held


def test_a_work_dir_that_cannot_be_locked_is_said(tmp_path, monkeypatch):
    """No flock on the file system (some network mounts): the run goes on, with a warning."""
    import errno

    from mmgc.utils import run_checks

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, 'No locks available')

    monkeypatch.setattr(run_checks.fcntl, 'flock', no_locks)
    with pytest.warns(UserWarning, match=r'cannot be locked \(flock failed: .*No locks available'
                      r'\): a second training into it at the same time would not be refused'):
        lock = lock_work_dir(str(tmp_path), 'none')
    assert not lock.held
