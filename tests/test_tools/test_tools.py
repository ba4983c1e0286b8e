"""tools/: train.py, test.py and dist_train.sh on GC configs, as mmdet's; mmdet's own train.py and
test.py on a GC config; --amp on a CPU. Real (tiny) runs of the demo configs, on the CPU.

One uninterrupted 2-epoch Faster R-CNN run (``faster_run``) is shared: its evaluation, its
epoch-1 checkpoint to resume from (with mmgc's train.py and with mmdet's) and its final
checkpoint to evaluate (with both test.py). The test configs import this module
(``custom_imports``) for the two hooks below.
"""
import importlib.util
import json
import os
import pickle
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.dist import get_dist_info
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner import set_random_seed

import mmgc  # noqa: F401  (torch.load(weights_only=True) of mmengine checkpoints, below)

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
TOOLS = REPO / 'tools'
DEMO = REPO / 'configs' / 'demo'
TIMEOUT = 600

# --- hooks the test configs use (imported by the training processes) ---------------------------


@HOOKS.register_module()
class MmgcTestReseedHook(Hook):
    """Seeds python, numpy and torch from (seed, epoch) before each training epoch.

    mmengine's checkpoints hold the weights, the optimizer, the schedulers, the epoch and the
    seed, but not the global random state, which the RPN / R-CNN samplers (``torch.randperm``)
    and ``RandomFlip`` (numpy) draw from. Reseeding per epoch makes an epoch's randomness the same
    in an uninterrupted run and in a resumed one, so the final weights can be compared exactly.
    """
    priority = 'VERY_HIGH'

    def before_train_epoch(self, runner):
        set_random_seed(runner.seed + runner.epoch)


@HOOKS.register_module()
class MmgcTestDumpWeightsHook(Hook):
    """Saves each rank's final model state and the distributed setting it ran under."""

    def after_train(self, runner):
        rank, world_size = get_dist_info()
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        torch.save(
            dict(state_dict=model.state_dict(),
                 parameters=[name for name, _ in model.named_parameters()],
                 rank=rank, world_size=world_size, wrapper=type(runner.model).__name__,
                 backend=(torch.distributed.get_backend()
                          if torch.distributed.is_initialized() else None),
                 **self.extra(runner)),
            os.path.join(runner.work_dir, f'weights_rank{rank}.pth'))

    def extra(self, runner) -> dict:
        """More to save, for subclasses."""
        return {}


# --- helpers ------------------------------------------------------------------------------------


def write_config(path, base, data_root, max_epochs):
    """A tiny-run twin of a demo config: 8 training images in batches of 2, 4 to evaluate,
    evaluation after the last epoch, a checkpoint every epoch, a fixed seed, and the backbone
    from scratch (the demo's pretrained one is tested in test_gc_demo.py)."""
    data_root = f'{data_root}/'
    path.write_text(f"""
_base_ = {str(base)!r}
custom_imports = dict(imports=['mmgc', 'tests.test_tools.test_tools'],
                      allow_failed_imports=False)
data_root = {data_root!r}
model = dict(backbone=dict(init_cfg=None))
train_dataloader = dict(batch_size=2, dataset=dict(data_root=data_root))
val_dataloader = dict(batch_size=2, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs={max_epochs}, val_interval={max_epochs})
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, max_keep_ckpts=-1))
custom_hooks = [dict(type='MmgcTestReseedHook'), dict(type='MmgcTestDumpWeightsHook')]
randomness = dict(seed=0)
""")
    return path


def subprocess_env(**extra):
    env = dict(os.environ)
    # The training processes import this module (custom_imports) and mmgc from the checkout.
    env['PYTHONPATH'] = os.pathsep.join(p for p in (env.get('PYTHONPATH'), str(REPO)) if p)
    # What is tested is the CPU path (gloo, --amp refused), on a machine with a GPU too.
    env['CUDA_VISIBLE_DEVICES'] = ''
    env.update(extra)
    return env


def run(args, check=True, **extra_env):
    proc = subprocess.run([str(a) for a in args], cwd=REPO, env=subprocess_env(**extra_env),
                          capture_output=True, text=True, timeout=TIMEOUT)
    if check and proc.returncode != 0:
        pytest.fail(f'{" ".join(map(str, args))} exited with {proc.returncode}:\n'
                    f'{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}')
    return proc


def metrics(work_dir, mode):
    """The last COCO metrics a run wrote: train.py in <stamp>/vis_data/scalars.json, test.py in
    <stamp>/<stamp>.json."""
    pattern = '*/vis_data/scalars.json' if mode == 'train' else '*/*.json'
    found = [record for path in sorted(Path(work_dir).glob(pattern))
             for record in map(json.loads, path.read_text().splitlines())
             if any(key.startswith('coco/') for key in record)]
    assert found, f'no coco/ metrics written under {work_dir}'
    return found[-1]


def coco_metrics(record):
    return {key: value for key, value in record.items() if key.startswith('coco/')}


def log_text(work_dir):
    """The (rank 0) log of a run: <stamp>/<stamp>.log."""
    logs = sorted(p for p in Path(work_dir).glob('*/*.log') if p.stem == p.parent.name)
    assert logs, f'no log under {work_dir}'
    return logs[-1].read_text()


def state_dict(path):
    return torch.load(path, map_location='cpu', weights_only=True)['state_dict']


def assert_same_tensors(actual, expected):
    assert actual.keys() == expected.keys()
    differ = [k for k in expected if not torch.equal(actual[k], expected[k])]
    assert not differ, f'{len(differ)} of {len(expected)} tensors differ, e.g. {differ[:5]}'


def mmdet_tool(name):
    spec = importlib.util.find_spec('mmdet')
    path = Path(spec.origin).parent / '.mim' / 'tools' / name
    assert path.is_file(), f'mmdet does not ship {path}'
    return path


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    spec = importlib.util.spec_from_file_location(
        'synthetic_coco', REPO / 'tools' / 'dataset_converters' / 'synthetic_coco.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_dataset(tmp_path_factory.mktemp('synthetic_coco'), train=8, val=4,
                               seed=0, size=128)


@pytest.fixture(scope='module')
def faster_config(data_root, tmp_path_factory):
    return write_config(tmp_path_factory.mktemp('configs') / 'faster_gc_tiny.py',
                        DEMO / 'faster-rcnn_r18_fpn_gc_synthetic.py', data_root, max_epochs=2)


@pytest.fixture(scope='module')
def faster_run(faster_config, tmp_path_factory):
    """tools/train.py, Faster R-CNN GC, 2 epochs uninterrupted, evaluated at the end."""
    work_dir = tmp_path_factory.mktemp('faster_run')
    proc = run([PYTHON, TOOLS / 'train.py', faster_config, '--work-dir', work_dir])
    return work_dir, proc


# --- tests --------------------------------------------------------------------------------------


def test_train_faster_rcnn_gc_and_evaluate(faster_run):
    work_dir, proc = faster_run
    assert (work_dir / 'epoch_1.pth').is_file() and (work_dir / 'epoch_2.pth').is_file()
    log = log_text(work_dir)
    # mmengine's Runner logging and progress, the GC optimizer in the config that ran.
    assert re.search(r'Epoch\(train\)\s+\[2\]\[4/4\]', log)
    assert "type='SGDGC'" in log
    assert 'coco/bbox_mAP:' in log and 'coco/bbox_mAP:' in proc.stdout
    assert 0.0 <= metrics(work_dir, 'train')['coco/bbox_mAP'] <= 1.0
    weights = torch.load(work_dir / 'weights_rank0.pth', weights_only=True)
    assert (weights['world_size'], weights['backend']) == (1, None)
    checkpoint = torch.load(work_dir / 'epoch_2.pth', map_location='cpu', weights_only=True)
    assert (checkpoint['meta']['epoch'], checkpoint['meta']['iter']) == (2, 8)
    assert_same_tensors(checkpoint['state_dict'], weights['state_dict'])
    # The GC optimizer was built: its GC options are in the saved param groups.
    assert checkpoint['optimizer']['param_groups'][0]['use_gc'] is True


def test_train_mask_rcnn_gc_and_evaluate(data_root, tmp_path):
    config = write_config(tmp_path / 'mask_gc_tiny.py',
                          DEMO / 'mask-rcnn_r18_fpn_gc_synthetic.py', data_root, max_epochs=1)
    work_dir = tmp_path / 'work'
    proc = run([PYTHON, TOOLS / 'train.py', config, '--work-dir', work_dir])
    assert (work_dir / 'epoch_1.pth').is_file()
    log = log_text(work_dir)
    assert 'coco/bbox_mAP:' in log and 'coco/segm_mAP:' in log
    assert 'coco/segm_mAP:' in proc.stdout
    found = metrics(work_dir, 'train')
    assert 0.0 <= found['coco/bbox_mAP'] <= 1.0 and 0.0 <= found['coco/segm_mAP'] <= 1.0


def test_resume_gives_the_uninterrupted_weights(faster_run, faster_config, tmp_path):
    """Epoch 1's checkpoint of the 2-epoch run, resumed to epoch 2 in a fresh process (torch's
    safe loading: mmgc allow-lists the checkpoint's contents): every tensor of the final
    state_dict equals the uninterrupted run's, bit for bit."""
    straight, _ = faster_run
    work_dir = tmp_path / 'resumed'
    run([PYTHON, TOOLS / 'train.py', faster_config, '--work-dir', work_dir,
         '--resume', straight / 'epoch_1.pth'])
    log = log_text(work_dir)
    assert 'resumed epoch: 1, iter: 4' in log
    assert not re.search(r'Epoch\(train\)\s+\[1\]', log)  # epoch 1 is not trained again
    assert not (work_dir / 'epoch_1.pth').exists()
    assert_same_tensors(state_dict(work_dir / 'epoch_2.pth'), state_dict(straight / 'epoch_2.pth'))


def test_resume_auto_from_the_work_dir(faster_run, faster_config, tmp_path):
    """``--resume`` without a path: the latest checkpoint in the work dir (here: epoch 2 of 2,
    so nothing is left to train)."""
    straight, _ = faster_run
    work_dir = tmp_path / 'auto'
    work_dir.mkdir()
    (work_dir / 'epoch_2.pth').write_bytes((straight / 'epoch_2.pth').read_bytes())
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'epoch_2.pth'))
    run([PYTHON, TOOLS / 'train.py', faster_config, '--work-dir', work_dir, '--resume',
         '--cfg-options', 'val_cfg=None', 'val_dataloader=None', 'val_evaluator=None'])
    assert 'resumed epoch: 2, iter: 8' in log_text(work_dir)


def test_mmdet_train_py_resumes_a_gc_config(faster_run, faster_config, tmp_path):
    """mmdet's own tools/train.py: only the config's custom_imports brings in mmgc, before the
    checkpoint is loaded; the resumed run ends with the uninterrupted run's weights."""
    straight, _ = faster_run
    work_dir = tmp_path / 'mmdet_resumed'
    run([PYTHON, mmdet_tool('train.py'), faster_config, '--work-dir', work_dir,
         '--resume', straight / 'epoch_1.pth'])
    assert 'resumed epoch: 1, iter: 4' in log_text(work_dir)
    assert_same_tensors(state_dict(work_dir / 'epoch_2.pth'), state_dict(straight / 'epoch_2.pth'))


@pytest.mark.parametrize('tool', ['mmgc', 'mmdet'])
def test_test_py_evaluates_a_checkpoint(faster_run, faster_config, tmp_path, tool):
    """tools/test.py CONFIG CKPT --out: metrics printed and written, predictions dumped; the
    same with mmdet's own test.py on the GC config."""
    straight, _ = faster_run
    script = TOOLS / 'test.py' if tool == 'mmgc' else mmdet_tool('test.py')
    out = tmp_path / 'results.pkl'
    proc = run([PYTHON, script, faster_config, straight / 'epoch_2.pth',
                '--work-dir', tmp_path / 'work', '--out', out])
    assert 'Load checkpoint from' in proc.stdout
    assert re.search(r'Epoch\(test\) \[2/2\]\s+coco/bbox_mAP: ', proc.stdout)
    # The checkpoint's weights were loaded: the metrics of the run's own final evaluation.
    assert coco_metrics(metrics(tmp_path / 'work', 'test')) == \
        coco_metrics(metrics(straight, 'train'))
    with open(out, 'rb') as f:
        results = pickle.load(f)
    assert len(results) == 4
    assert {'img_id', 'pred_instances'} <= set(results[0])


def test_test_py_tta_on_a_detector(faster_run, faster_config, tmp_path):
    """--tta on a config without tta_model: mmdet's DetTTAModel merges each image with its flip
    (COCO metrics come out; the flip keys reach the merge step)."""
    straight, _ = faster_run
    proc = run([PYTHON, TOOLS / 'test.py', faster_config, straight / 'epoch_2.pth', '--tta',
                '--work-dir', tmp_path / 'work'])
    both = proc.stdout + proc.stderr
    assert 'using DetTTAModel on each image and its horizontal flip' in both
    assert re.search(r'coco/bbox_mAP: [0-9.]+', both), both[-3000:]


def test_dist_test_two_processes_on_gloo(faster_run, faster_config, tmp_path):
    """``bash tools/dist_test.sh CONFIG CKPT 2`` on a machine without CUDA: both processes
    evaluate their half; the gathered results give the single-process metrics."""
    straight, _ = faster_run
    out = tmp_path / 'results.pkl'
    run(['bash', TOOLS / 'dist_test.sh', faster_config, straight / 'epoch_2.pth', 2,
         '--work-dir', tmp_path / 'work', '--out', out], PORT=str(free_port()), PYTHON=PYTHON)
    log = log_text(tmp_path / 'work')
    assert "dist_cfg: {'backend': 'gloo'}" in log and 'Distributed training: True' in log
    # Rank 0's log (mmengine's LoggerHook has every rank write <stamp>.json, at once).
    logged = re.findall(r'Epoch\(test\) \[\d+/\d+\]\s+(coco/.*?)\s+data_time', log)
    expected = re.findall(r'Epoch\(val\) \[2\]\[2/2\]\s+(coco/.*?)\s+data_time',
                          log_text(straight))
    assert len(logged) == 1 and logged == expected
    with open(out, 'rb') as f:
        assert sorted(result['img_id'] for result in pickle.load(f)) == [0, 1, 2, 3]


def test_dist_train_two_processes_on_gloo(faster_config, tmp_path):
    """``bash tools/dist_train.sh CONFIG 2`` on a machine without CUDA: torchrun starts two
    processes, the process group is gloo, and both ranks end with the same parameters (DDP
    averages their gradients) though they saw different images (their BN statistics differ)."""
    work_dir = tmp_path / 'dist'
    run(['bash', TOOLS / 'dist_train.sh', faster_config, 2, '--work-dir', work_dir,
         '--cfg-options', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1'],
        PORT=str(free_port()), PYTHON=PYTHON)
    ranks = [torch.load(work_dir / f'weights_rank{r}.pth', weights_only=True) for r in (0, 1)]
    for rank, dump in enumerate(ranks):
        assert (dump['rank'], dump['world_size'], dump['backend']) == (rank, 2, 'gloo')
        assert dump['wrapper'] == 'MMDistributedDataParallel'
    first, second = ranks[0]['state_dict'], ranks[1]['state_dict']
    params = ranks[0]['parameters']
    assert len(params) > 50
    assert_same_tensors({k: second[k] for k in params}, {k: first[k] for k in params})
    running = [k for k in first if k.endswith('running_mean')]
    assert running and any(not torch.equal(first[k], second[k]) for k in running)
    # Rank 0 wrote the checkpoint; 8 images, 2 ranks, batch 2: 2 iterations per epoch.
    checkpoint = torch.load(work_dir / 'epoch_1.pth', map_location='cpu', weights_only=True)
    assert checkpoint['meta']['iter'] == 2
    assert_same_tensors(checkpoint['state_dict'], first)
    log = log_text(work_dir)
    assert "dist_cfg: {'backend': 'gloo'}" in log and 'Distributed training: True' in log
    assert 'coco/bbox_mAP:' in log


def test_amp_on_a_cpu_machine_is_one_error_line(tmp_path):
    proc = run([PYTHON, TOOLS / 'train.py', DEMO / 'faster-rcnn_r18_fpn_gc_synthetic.py',
                '--amp', '--work-dir', tmp_path], check=False)
    assert proc.returncode != 0
    assert 'Traceback' not in proc.stderr + proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert '--amp' in lines[0] and 'CUDA' in lines[0]
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize('config', ['faster-rcnn_r18_fpn_gc_synthetic.py',
                                    'mask-rcnn_r18_fpn_gc_synthetic.py',
                                    'faster-rcnn_r18_fpn_synthetic.py'])
def test_amp_form_of_demo_configs_builds(monkeypatch, config):
    """What --amp makes of a (GC) config builds (mmengine asserts a GPU; faked here): the GC
    optimizer under AmpOptimWrapper, and GCOptimWrapper -> AmpGCOptimWrapper with its options."""
    from mmengine.config import Config
    from mmengine.optim import AmpOptimWrapper, build_optim_wrapper
    from mmengine.optim.optimizer import amp_optimizer_wrapper
    from mmengine.registry import DefaultScope

    from mmgc.utils import amp_optim_wrapper
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available', lambda: True)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    for wrapper_type in ('OptimWrapper', 'GCOptimWrapper'):
        cfg = Config.fromfile(DEMO / config)
        assert cfg.optim_wrapper.type == 'OptimWrapper'
        if wrapper_type == 'GCOptimWrapper':
            # A torch optimizer with GC from the wrapper (a GC optimizer would centralize twice).
            cfg.optim_wrapper.update(type='GCOptimWrapper', gc_conv_only=True)
            cfg.optim_wrapper.optimizer.type = 'SGD'
        amp_optim_wrapper(cfg.optim_wrapper)
        assert cfg.optim_wrapper.loss_scale == 'dynamic'
        with DefaultScope.overwrite_default_scope(cfg.default_scope):
            wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
        if wrapper_type == 'OptimWrapper':
            assert type(wrapper) is AmpOptimWrapper
            assert isinstance(wrapper.optimizer, mmgc.SGDGC) is ('gc' in config)
        else:
            assert type(wrapper) is mmgc.AmpGCOptimWrapper
            assert type(wrapper.optimizer) is torch.optim.SGD
            assert wrapper.gc_defaults['gc_conv_only'] is True


def _parser_of(path, monkeypatch):
    """The argparse parser a tool's parse_args() builds (caught before it parses)."""
    import argparse

    class Caught(Exception):
        pass

    def catch(parser, *args, **kwargs):
        raise Caught(parser)

    monkeypatch.setattr(argparse.ArgumentParser, 'parse_args', catch)
    spec = importlib.util.spec_from_file_location(f'tool_{abs(hash(str(path)))}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(Caught) as caught:
        module.parse_args()
    parser = caught.value.args[0]
    return {action.dest: (tuple(action.option_strings), action.nargs, action.const,
                          action.default, action.type, action.choices, action.required,
                          type(action).__name__) for action in parser._actions}


def mmpretrain_tool(name):
    spec = importlib.util.find_spec('mmpretrain')
    path = Path(spec.origin).parent / '.mim' / 'tools' / name
    assert path.is_file(), f'mmpretrain does not ship {path}'
    return path


@pytest.mark.parametrize('family', ['mmdet', 'mmpretrain'])
@pytest.mark.parametrize('tool', ['train.py', 'test.py'])
def test_same_flags_as_mmdet_and_mmpretrain(monkeypatch, tool, family):
    """Every flag of mmdet's and of mmpretrain's tool, with the same spellings, arguments,
    defaults and choices (a value type only where both give one: mmdet's --out is str,
    mmpretrain's untyped)."""
    ours = _parser_of(TOOLS / tool, monkeypatch)
    theirs = _parser_of((mmdet_tool if family == 'mmdet' else mmpretrain_tool)(tool), monkeypatch)
    for dest, flag in theirs.items():
        assert dest in ours, f'{family} {tool} has {flag[0]}, ours not'
        mine = ours[dest]
        assert mine[:4] + mine[5:] == flag[:4] + flag[5:], (dest, mine, flag)
        assert None in (mine[4], flag[4]) or mine[4] == flag[4], (dest, mine, flag)


def test_shell_scripts_as_mmdet():
    """Same arguments and environment variables; torchrun in place of torch.distributed.launch."""
    for name in ('dist_train.sh', 'dist_test.sh', 'slurm_train.sh', 'slurm_test.sh'):
        ours, theirs = (TOOLS / name).read_text(), mmdet_tool(name).read_text()
        variables = re.compile(r'^([A-Z_]+)=', re.M)
        assert set(variables.findall(theirs)) <= set(variables.findall(ours)), name
        if name.startswith('dist'):
            assert 'torch.distributed.run' in ours and 'torch.distributed.launch' not in ours
            for flag in ('--nnodes', '--node_rank', '--master_addr', '--nproc_per_node',
                         '--master_port', '--launcher pytorch'):
                assert flag in ours, (name, flag)
        else:
            assert '--launcher="slurm"' in ours and 'srun -p ${PARTITION}' in ours
