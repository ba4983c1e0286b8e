"""tools/misc/gc_demo.py: the pretrained backbone reaches the demo detectors (mmdet's
``init_cfg=dict(type='Pretrained', prefix='backbone.')`` path, with a checkpoint of the
pretraining's mmpretrain classifier), and the demo pretrains once, reuses its cache, and
pretrains again when asked (tools run by a stand-in for ``gc_demo.run``: no minutes of
training)."""
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
        if tool.endswith('synthetic_coco.py'):
            (Path(command[2]) / 'annotations').mkdir(parents=True)
            (Path(command[2]) / 'annotations' / 'instances_val.json').write_text('{}')
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
def fake(monkeypatch, tmp_path):
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
