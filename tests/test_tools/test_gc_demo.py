"""tools/misc/gc_demo.py: the pretrained backbone reaches the demo detectors (mmdet's
``init_cfg=dict(type='Pretrained', prefix='backbone.')`` path, with a checkpoint of the
pretraining's mmpretrain classifier), and the demo pretrains once, reuses its cache, and
pretrains again when asked, and ``--seeds N`` runs gc_repeat.py's sweep (tools run by
stand-ins for ``gc_demo.run`` and ``gc_repeat.run_tool``: no minutes of training)."""
import json
import re
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook

from ..test_configs.test_demo_configs import load_tool

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / 'configs' / 'demo'


demo = load_tool('tools/misc/gc_demo.py')


# --- the pretrained backbone reaches the detector -----------------------------------------------


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory) -> Path:
    """A checkpoint as gc_demo.py publishes the pretraining's: an mmengine checkpoint with the
    mmpretrain classifier's whole state_dict (backbone.*, head.*), every tensor moved away from
    its initial value (running_var kept positive, counters changed)."""
    from mmpretrain.registry import MODELS
    torch.manual_seed(1)
    classifier = MODELS.build(Config.fromfile(str(REPO / demo.PRETRAIN_CONFIG)).model)
    classifier.init_weights()
    state = {}
    for key, value in classifier.state_dict().items():
        if not value.is_floating_point():
            state[key] = value + 17
        elif key.endswith('running_var'):
            state[key] = torch.rand_like(value) + 0.5
        else:
            state[key] = torch.randn_like(value)
    path = tmp_path_factory.mktemp('pretrain') / 'pretrained.pth'
    torch.save(dict(meta=dict(epoch=1), state_dict=state), path)
    return path


def backbone_of(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}


def assert_backbone_is(actual: Dict[str, torch.Tensor], expected: Dict[str, torch.Tensor]):
    assert actual.keys() == expected.keys() and len(expected) > 100
    differ = [k for k in expected if not torch.equal(actual[k], expected[k])]
    assert not differ, f'{len(differ)} of {len(expected)} backbone tensors differ: {differ[:5]}'


@pytest.mark.parametrize('model', ['mask-rcnn', 'faster-rcnn'])
def test_init_weights_loads_the_pretrained_backbone(model, pretrained):
    from mmdet.registry import MODELS
    cfg = Config.fromfile(str(DEMO / f'{model}_r18_fpn_synthetic.py'))
    assert cfg.model.backbone.init_cfg.type == 'Pretrained'
    expected = backbone_of(torch.load(pretrained, weights_only=True)['state_dict'])

    cfg.model.backbone.init_cfg.checkpoint = str(pretrained)
    detector = MODELS.build(cfg.model)
    detector.init_weights()
    assert_backbone_is(detector.backbone.state_dict(), expected)

    # Without the init_cfg, no backbone parameter would have these values.
    cfg.model.backbone.init_cfg = None
    scratch = MODELS.build(cfg.model)
    scratch.init_weights()
    params = dict(scratch.backbone.named_parameters())
    assert params and all(not torch.equal(p, expected[k]) for k, p in params.items())


class RecordBackbone(Hook):
    """Keeps a copy of the backbone's state when training starts (after the Runner's weight
    initialization, before the first step)."""

    def before_train(self, runner) -> None:
        self.state = {k: v.clone() for k, v in runner.model.backbone.state_dict().items()}


def test_runner_starts_training_from_the_pretrained_backbone(pretrained, tmp_path):
    """The real path: the Runner initializes the demo detector (init_cfg) and trains one
    iteration from exactly the pretrained backbone."""
    from mmengine.runner import Runner
    make_dataset = load_tool('tools/dataset_converters/synthetic_coco.py').make_dataset
    data_root = str(make_dataset(tmp_path / 'data', train=2, val=1, seed=0)) + '/'
    cfg = Config.fromfile(str(DEMO / 'faster-rcnn_r18_fpn_gc_synthetic.py'))
    cfg.model.backbone.init_cfg.checkpoint = str(pretrained)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.train_dataloader.batch_size = 2
    cfg.train_dataloader.dataset.data_root = data_root
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1, val_interval=1)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.test_cfg = cfg.test_dataloader = cfg.test_evaluator = None
    cfg.default_hooks.checkpoint = None
    cfg.log_level = 'WARNING'
    runner = Runner.from_cfg(cfg)
    record = RecordBackbone()
    runner.register_hook(record)
    runner.train()
    assert runner.iter == 1
    expected = backbone_of(torch.load(pretrained, weights_only=True)['state_dict'])
    assert_backbone_is(record.state, expected)
    # The step moved the backbone away from it (it is fine-tuned, not frozen).
    assert not torch.equal(runner.model.backbone.conv1.weight, expected['conv1.weight'])


# --- gc_demo.py: pretrain once, reuse, rebuild ------------------------------------------------


class FakeTools:
    """Stands in for gc_demo.run: records each command and does what the tool would leave
    behind (datasets, checkpoints, last_checkpoint), printing what gc_demo.py reads."""

    def __init__(self, top1: float = 93.5, loads: bool = True):
        self.commands: List[List[str]] = []
        self.top1, self.loads = top1, loads

    def pretrainings(self) -> List[List[str]]:
        return [c for c in self.commands if demo.PRETRAIN_CONFIG in c]

    def detection_trainings(self) -> List[List[str]]:
        return [c for c in self.commands if c[1] == 'tools/train.py'
                and demo.PRETRAIN_CONFIG not in c]

    def __call__(self, command: List[str]) -> str:
        self.commands.append(command)
        tool = command[1]
        if tool.endswith('synthetic_shapes_cls.py'):
            for split in ('train', 'val'):
                for name in ('circle', 'square'):
                    folder = Path(command[2]) / split / name
                    folder.mkdir(parents=True)
                    (folder / '000000.png').write_bytes(b'')
            return ''
        if tool.endswith('synthetic_coco.py'):  # what the real tool leaves, settings too
            root = Path(command[2])
            (root / 'annotations').mkdir(parents=True, exist_ok=True)
            (root / 'annotations' / 'instances_val.json').write_text('{}')
            coco = demo.synthetic_coco
            (root / coco.SETTINGS_FILE).write_text(json.dumps(
                coco.settings(300, 60, 0, 128, coco.LEVELS['demo'])))
            return ''
        if tool == 'tools/test.py':
            return ('coco/bbox_mAP: 0.6000  coco/bbox_mAP_50: 0.9000  coco/bbox_mAP_75: 0.7000  '
                    'coco/segm_mAP: 0.5000  coco/segm_mAP_50: 0.8000  coco/segm_mAP_75: 0.6000')
        work_dir = Path(command[command.index('--work-dir') + 1])
        work_dir.mkdir(parents=True, exist_ok=True)
        checkpoint = work_dir / 'epoch_3.pth'
        torch.save(dict(meta=dict(epoch=3), state_dict={'backbone.conv1.weight': torch.ones(1)},
                        optimizer={}), checkpoint)
        (work_dir / 'last_checkpoint').write_text(str(checkpoint))
        if demo.PRETRAIN_CONFIG in command:
            return f'Epoch(val) [3][2/2]    accuracy/top1: {self.top1:.4f}  data_time: 0.01'
        options = command[command.index('--cfg-options') + 1:]
        loaded = [o.split('=', 1)[1] for o in options
                  if o.startswith('model.backbone.init_cfg.checkpoint=')]
        if loaded and self.loads:
            return f'load backbone. in model from: {loaded[0]}\nEpoch(train) [8][75/75]'
        return 'Epoch(train) [8][75/75]'


@pytest.fixture
def plots(monkeypatch) -> List[tuple]:
    """The plots asked for (gc_repeat.plot_runs' arguments), none drawn."""
    calls: List[tuple] = []
    monkeypatch.setattr(demo.gc_repeat, 'plot_runs',
                        lambda runs, out: calls.append(([str(r) for r in runs], Path(out))))
    return calls


@pytest.fixture
def fake(monkeypatch, tmp_path, plots):
    tools = FakeTools()
    monkeypatch.setattr(demo, 'run', tools)
    return tools


def demo_args(tmp_path, *extra: str) -> List[str]:
    return ['--work-dir', str(tmp_path / 'work'), '--data', str(tmp_path / 'coco'),
            '--pretrain-data', str(tmp_path / 'shapes'), *extra]


def test_pretrains_once_then_reuses_the_cache(fake, tmp_path, capsys):
    cache = tmp_path / 'work' / 'pretrain' / demo.PRETRAINED
    demo.main(demo_args(tmp_path, '--model', 'faster'))
    assert len(fake.pretrainings()) == 1 and cache.is_file()
    # The published checkpoint: the classifier's weights and what the table says of them.
    published = torch.load(cache, weights_only=True)
    assert set(published) == {'meta', 'state_dict'}                  # no optimizer state
    assert published['state_dict']['backbone.conv1.weight'].tolist() == [1.0]
    meta = published['meta']
    assert (meta['epochs'], meta['top1'], meta['checkpoint']) == (3, 93.5, str(cache))
    assert (meta['dataset'], meta['classes'], meta['images']) == \
        ('synthetic shapes', ['circle', 'square'], 2)
    # Both detection runs start from it, through the config's init_cfg.
    option = f'model.backbone.init_cfg.checkpoint={cache}'
    assert [c[c.index('--cfg-options') + 1:] for c in fake.detection_trainings()] == \
        [[option], [option]]
    out = capsys.readouterr().out
    title = next(line for line in out.splitlines() if line.startswith('Faster R-CNN'))
    assert 'fine-tuned from a pretrained backbone' in title
    assert re.search(r'^backbone: ResNet-18 pretrained with mmpretrain on synthetic shapes '
                     r'\(2 classes, 2 images\), 3 epochs in \d+\.\d min, val top-1 93\.5%$',
                     out, re.M), out
    assert f'pretrained backbone: {cache}' in out

    # A second demo: no pretraining, the same checkpoint, the same description.
    fake.top1 = 10.0
    before = len(fake.commands)
    demo.main(demo_args(tmp_path, '--model', 'faster'))
    assert len(fake.pretrainings()) == 1
    assert not any('synthetic_shapes_cls.py' in c[1] for c in fake.commands[before:])
    assert [c[c.index('--cfg-options') + 1:] for c in fake.detection_trainings()[2:]] == \
        [[option], [option]]
    assert 'reusing the pretrained backbone' in capsys.readouterr().out
    assert torch.load(cache, weights_only=True)['meta'] == meta


def test_rebuild_pretrain_trains_again(fake, tmp_path):
    cache = tmp_path / 'work' / 'pretrain' / demo.PRETRAINED
    demo.pretrain(tmp_path / 'work' / 'pretrain', str(tmp_path / 'shapes'))
    assert torch.load(cache, weights_only=True)['meta']['top1'] == 93.5
    fake.top1 = 97.25
    demo.main(demo_args(tmp_path, '--rebuild-pretrain'))
    assert len(fake.pretrainings()) == 2
    assert torch.load(cache, weights_only=True)['meta']['top1'] == 97.25
    # The dataset was there: written once.
    assert sum('synthetic_shapes_cls.py' in c[1] for c in fake.commands) == 1


def test_from_scratch_skips_the_pretraining(fake, tmp_path, capsys):
    demo.main(demo_args(tmp_path, '--from-scratch'))
    assert not fake.pretrainings()
    assert [c[c.index('--cfg-options') + 1:] for c in fake.detection_trainings()] == \
        [['model.backbone.init_cfg=None']] * 2
    out = capsys.readouterr().out
    assert 'ResNet-18 FPN from scratch' in out and 'pretrained with' not in out
    with pytest.raises(SystemExit):
        demo.parse_args(['--from-scratch', '--rebuild-pretrain'])


def test_a_run_that_did_not_load_the_backbone_is_an_error(fake, tmp_path):
    fake.loads = False
    with pytest.raises(SystemExit, match='did not load the pretrained backbone'):
        demo.main(demo_args(tmp_path))


def test_one_seed_is_the_single_run_with_its_plots(fake, plots, tmp_path):
    demo.main(demo_args(tmp_path, '--model', 'faster'))
    default = [c for c in fake.commands if demo.PRETRAIN_CONFIG not in c
               and c[1] in ('tools/train.py', 'tools/test.py')]
    before = len(fake.commands)
    demo.main(demo_args(tmp_path, '--model', 'faster', '--seeds', '1'))
    assert fake.commands[before:] == default and len(default) == 4  # 2 x (train, test)
    work = tmp_path / 'work'
    stems = [Path(c).stem for c in demo.CONFIGS['faster'][1:3]]
    assert [c[c.index('--work-dir') + 1] for c in fake.detection_trainings()[:2]] == \
        [str(work / stem) for stem in stems]
    assert plots == [([str(work / stem) for stem in stems], work / 'plots')] * 2
    with pytest.raises(SystemExit):
        demo.parse_args(['--seeds', '0'])


# --- gc_demo.py --seeds N: gc_repeat.py's sweep ------------------------------------------------


class FakeSweepTools:
    """Stands in for gc_repeat.run_tool: a training leaves its fingerprint and checkpoint pointer
    and prints mmengine's backbone line; a test prints COCO metrics that depend on the seed
    (GC 1 point of box AP above the baseline, except seed 1, equal)."""

    def __init__(self, loads: bool = True, weak_ap50: float = 0.9):
        self.commands: List[List[str]] = []
        self.loads, self.weak_ap50 = loads, weak_ap50

    def trainings(self) -> List[List[str]]:
        return [c for c in self.commands if 'tools/train.py' in c]

    def __call__(self, command: List[str], output_file: Path):
        self.commands.append(command)
        output_file.parent.mkdir(parents=True, exist_ok=True)
        if 'tools/test.py' in command:
            run = Path(command[command.index('--work-dir') + 1]).parent
            seed, gc = int(run.name[4:]), '_gc_' in run.parent.name
            ap = 0.40 + 0.02 * seed + (0.01 if gc and seed != 1 else 0)
            ap50 = self.weak_ap50 if gc and seed == 2 else 0.9
            return 0, (f'Epoch(test) [2/2]    coco/bbox_mAP: {ap:.4f}  coco/bbox_mAP_50: '
                       f'{ap50:.4f}  coco/bbox_mAP_75: 0.5000  coco/bbox_mAP_s: -1.0000  '
                       'data_time: 0.01  time: 0.1')
        work = Path(command[command.index('--work-dir') + 1])
        seed = next(o for o in command if o.startswith('randomness.seed=')).split('=')[1]
        (work / 'last_checkpoint').write_text(str(work / 'epoch_8.pth'))
        Path(command[command.index(demo.gc_repeat.RECORD_FLAG) + 1]).write_text(json.dumps(
            dict(weights=f'w{seed}', first_batch=f'b{seed}', data_order=f'o{seed}', iters=8)))
        loaded = [o.split('=', 1)[1] for o in command
                  if o.startswith('model.backbone.init_cfg.checkpoint=')]
        return 0, (f'load backbone. in model from: {loaded[0]}\n' if loaded and self.loads
                   else '') + 'Epoch(train) [8][75/75]'


@pytest.fixture
def sweep_tools(monkeypatch, fake) -> FakeSweepTools:
    tools = FakeSweepTools()
    monkeypatch.setattr(demo.gc_repeat, 'run_tool', tools)
    return tools


def test_seeds_run_a_sweep_from_the_pretrained_backbone(sweep_tools, fake, plots, tmp_path,
                                                         capsys):
    demo.main(demo_args(tmp_path, '--model', 'faster', '--seeds', '3'))
    assert len(fake.pretrainings()) == 1 and not fake.detection_trainings()
    work = tmp_path / 'work' / 'sweep'
    cache = tmp_path / 'work' / 'pretrain' / demo.PRETRAINED
    baseline, gc = demo.CONFIGS['faster'][1:3]
    trainings = sweep_tools.trainings()
    assert [(c[c.index('tools/train.py') + 1], c[c.index('--work-dir') + 1],
             c[c.index('--cfg-options') + 1:]) for c in trainings] == \
        [(config, str(work / Path(config).stem / f'seed{seed}'),
          [f'randomness.seed={seed}', f'model.backbone.init_cfg.checkpoint={cache}'])
         for seed in range(3) for config in (baseline, gc)]
    assert len(sweep_tools.commands) == 12  # and 6 tests

    summary = json.loads((work / 'summary.json').read_text())
    assert summary['configs'] == dict(baseline=baseline, gc=gc)
    assert summary['metrics'] == ['coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75']
    box = summary['stats']['coco/bbox_mAP']
    assert box['baseline']['mean'] == pytest.approx(42.0)
    assert box['diff']['per_seed'] == pytest.approx([1.0, 0.0, 1.0])
    assert (box['gc_won'], box['tied'], box['gc_lost']) == (2, 1, 0)
    out = capsys.readouterr().out
    assert 'Faster R-CNN, ResNet-18 FPN fine-tuned from a pretrained backbone, synthetic COCO ' \
        'val, 3 seeds (0-2)' in out
    assert demo.gc_repeat.table(summary) in out
    assert re.search(r'^box AP50 +90\.0 \+- 0\.0 ', out, re.M), out
    assert 'backbone: ResNet-18 pretrained with mmpretrain on synthetic shapes' in out
    assert plots == [([str(work / Path(c).stem / f'seed{s}') for c in (baseline, gc)
                       for s in range(3)], work / 'plots')]

    # Again: every run finished, nothing trained.
    before = len(sweep_tools.commands)
    demo.main(demo_args(tmp_path, '--model', 'faster', '--seeds', '3'))
    assert len(sweep_tools.commands) == before
    # A new backbone: every run trained again from it.
    demo.main(demo_args(tmp_path, '--model', 'faster', '--seeds', '3', '--rebuild-pretrain'))
    assert len(fake.pretrainings()) == 2 and len(sweep_tools.commands) == before + 12


def test_sweep_refuses_a_run_without_the_backbone_or_that_did_not_learn(sweep_tools, tmp_path):
    sweep_tools.loads = False
    with pytest.raises(SystemExit, match='did not load the pretrained backbone'):
        demo.main(demo_args(tmp_path, '--model', 'faster', '--seeds', '2'))
    sweep_tools.loads, sweep_tools.weak_ap50 = True, 0.3
    with pytest.raises(SystemExit, match=r'a model did not learn \(AP50 below 50\): gc seed 2 '
                       r'bbox AP50 = 30\.0$'):
        demo.main(demo_args(tmp_path, '--model', 'faster', '--seeds', '3'))


def test_an_outdated_dataset_is_written_again(fake, tmp_path, capsys):
    """A dataset folder written by the first generator (no settings file) or with other
    settings is written again, once; a current one is reused."""
    coco = tmp_path / 'coco'
    (coco / 'annotations').mkdir(parents=True)
    (coco / 'annotations' / 'instances_val.json').write_text('{}')
    writes = lambda: [c for c in fake.commands if c[1].endswith('synthetic_coco.py')]  # noqa
    demo.main(demo_args(tmp_path, '--model', 'faster'))
    assert len(writes()) == 1
    assert 'not written with the demo\'s current settings' in capsys.readouterr().out
    demo.main(demo_args(tmp_path, '--model', 'faster'))
    assert len(writes()) == 1
    settings = json.loads((coco / demo.synthetic_coco.SETTINGS_FILE).read_text())
    (coco / demo.synthetic_coco.SETTINGS_FILE).write_text(json.dumps(dict(settings, clutter=0)))
    demo.main(demo_args(tmp_path, '--model', 'faster'))
    assert len(writes()) == 2
