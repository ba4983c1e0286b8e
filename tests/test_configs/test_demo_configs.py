"""The embedded demo: the synthetic dataset generators (detection, and the classification set
the backbone is pretrained on) and the demo configs (the detectors and their pretraining)."""
import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
from mmengine.config import Config

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / 'configs' / 'demo'


def load_tool(relative: str):
    spec = importlib.util.spec_from_file_location(Path(relative).stem, REPO / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


synthetic = load_tool('tools/dataset_converters/synthetic_coco.py')
shapes = load_tool('tools/dataset_converters/synthetic_shapes_cls.py')
PRETRAIN = REPO / 'configs' / 'demo' / 'resnet18_1xb32_synthetic-shapes.py'


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob('*') if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_generator_is_deterministic_by_seed(tmp_path):
    a = synthetic.make_dataset(tmp_path / 'a', train=6, val=3, seed=5)
    b = synthetic.make_dataset(tmp_path / 'b', train=6, val=3, seed=5)
    c = synthetic.make_dataset(tmp_path / 'c', train=6, val=3, seed=6)
    assert digest(a) == digest(b)
    assert digest(a) != digest(c)


@pytest.mark.parametrize('level', ['demo', 'easy'])
def test_generator_writes_valid_coco_instances(tmp_path, level):
    """Boxes and run-length masks are those of each object's visible pixels, exactly; classes
    as the level says; every image has an object."""
    import numpy as np
    from pycocotools.coco import COCO
    root = synthetic.make_dataset(tmp_path, train=20, val=5, seed=0, size=128, level=level)
    names = synthetic.LEVELS[level].class_names
    assert len(names) == (6 if level == 'demo' else 3)
    for split, count in (('train', 20), ('val', 5)):
        coco = COCO(str(root / 'annotations' / f'instances_{split}.json'))
        assert len(coco.getImgIds()) == count
        assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(names)
        assert all(coco.getAnnIds(imgIds=[i]) for i in coco.getImgIds())
        for ann in coco.loadAnns(coco.getAnnIds()):
            x, y, w, h = ann['bbox']
            assert 0 <= x and 0 <= y and x + w <= 128 and y + h <= 128 and w >= 2 and h >= 2
            mask = coco.annToMask(ann)
            assert mask.sum() == ann['area'] >= 12
            ys, xs = np.nonzero(mask)
            assert [xs.min(), ys.min(), xs.max() + 1 - x, ys.max() + 1 - y] == [x, y, w, h]
            assert (root / split / coco.loadImgs(ann['image_id'])[0]['file_name']).exists()
    classes = {a['category_id'] for a in json.loads(
        (root / 'annotations' / 'instances_train.json').read_text())['annotations']}
    assert classes == set(range(1, len(names) + 1))
    settings = json.loads((root / synthetic.SETTINGS_FILE).read_text())
    assert settings == synthetic.settings(20, 5, 0, 128, synthetic.LEVELS[level])
    assert settings['classes'] == len(names) and settings['generator'] >= 2


def test_demo_level_is_harder_than_easy(tmp_path):
    """The demo level: more objects per image, smaller ones, some partly hidden, colour no
    cue to the class; the easy one: colour-coded, whole objects."""
    import numpy as np
    stats = {}
    for level in ('demo', 'easy'):
        root = synthetic.make_dataset(tmp_path / level, train=40, val=1, seed=3, level=level)
        anns = json.loads((root / 'annotations' / 'instances_train.json').read_text())
        areas = np.array([a['area'] for a in anns['annotations']])
        stats[level] = dict(per_image=len(areas) / 40, small=(areas < 32**2 / 4).mean())
    assert stats['demo']['per_image'] > stats['easy']['per_image']
    assert stats['demo']['small'] > stats['easy']['small'] + 0.1


def test_generator_knobs_and_refusals(tmp_path, capsys):
    synthetic.main([str(tmp_path / 'k'), '--train', '3', '--val', '2', '--classes', '8',
                    '--objects', '3', '3', '--occlusion', '0', '--clutter', '0',
                    '--color-cue', 'on'])
    assert 'octagon' in capsys.readouterr().out
    settings = json.loads((tmp_path / 'k' / synthetic.SETTINGS_FILE).read_text())
    assert (settings['classes'], settings['objects'], settings['occlusion'],
            settings['clutter'], settings['color_cue']) == (8, [3, 3], 0, 0, True)
    for bad, message in ((['--classes', '9'], 'classes must be 1 to 8'),
                         (['--objects', '4', '2'], 'objects must be'),
                         (['--scale', '0', '0.1'], 'scale must be'),
                         (['--occlusion', '1'], 'occlusion must be'),
                         (['--train', '0'], '--train, --val and --size must be >= 1')):
        with pytest.raises(SystemExit, match=message):
            synthetic.main([str(tmp_path / 'bad')] + bad)


@pytest.mark.parametrize('model', ['mask-rcnn', 'faster-rcnn'])
def test_demo_twins_differ_only_in_the_optimizer(model):
    baseline = Config.fromfile(str(DEMO / f'{model}_r18_fpn_synthetic.py')).to_dict()
    gc = Config.fromfile(str(DEMO / f'{model}_r18_fpn_gc_synthetic.py')).to_dict()
    assert baseline['optim_wrapper']['optimizer'].pop('type') == 'SGD'
    assert gc['optim_wrapper']['optimizer'].pop('type') == 'SGDGC'
    assert baseline == gc
    # The demo's pretrained backbone, where gc_demo.py caches it (nothing to download).
    demo = load_tool('tools/misc/gc_demo.py')
    assert baseline['model']['backbone']['init_cfg'] == dict(
        type='Pretrained', prefix='backbone.',
        checkpoint=f'{demo.parse_args([]).work_dir}/pretrain/{demo.PRETRAINED}')
    assert baseline['custom_imports']['imports'] == ['mmgc']


def test_demo_table_in_the_papers_format():
    demo = load_tool('tools/misc/gc_demo.py')
    output = ('Epoch(test) [15/15] coco/bbox_mAP: 0.6010  coco/bbox_mAP_50: 0.9120  '
              'coco/bbox_mAP_75: 0.7000  coco/bbox_mAP_s: 0.5  coco/segm_mAP: 0.6500  '
              'coco/segm_mAP_50: 0.9300  coco/segm_mAP_75: 0.7400')
    baseline = demo.metrics_of(output)
    assert baseline == {'bbox': 0.601, 'bbox_50': 0.912, 'bbox_75': 0.7, 'segm': 0.65,
                        'segm_50': 0.93, 'segm_75': 0.74}
    gc = {k: v + 0.01 for k, v in baseline.items()}
    text = demo.table('Mask R-CNN', ('bbox', 'segm'), dict(baseline=baseline, gc=gc))
    lines = text.splitlines()
    assert 'box AP' in lines[1] and 'mask AP' in lines[1] and 'AP50' in lines[1]
    assert lines[3].split()[-7:] == ['60.1', '91.2', '70.0', '|', '65.0', '93.0', '74.0']
    assert lines[5].split()[-7:] == ['+1.0', '+1.0', '+1.0', '|', '+1.0', '+1.0', '+1.0']
    with pytest.raises(SystemExit, match='no COCO metrics'):
        demo.metrics_of('nothing here')


# --- the pretraining: classification dataset and config -----------------------------------------


def test_shapes_generator_is_deterministic_by_seed(tmp_path):
    a = shapes.make_dataset(tmp_path / 'a', train=2, val=1, seed=5)
    b = shapes.make_dataset(tmp_path / 'b', train=2, val=1, seed=5)
    c = shapes.make_dataset(tmp_path / 'c', train=2, val=1, seed=6)
    assert digest(a) == digest(b)
    assert digest(a) != digest(c)


def test_shapes_generator_is_balanced_and_loads_in_mmpretrain(tmp_path):
    import cv2
    from mmpretrain.datasets import CustomDataset
    root = shapes.make_dataset(tmp_path, train=4, val=2, seed=0, size=48)
    assert shapes.CLASSES == tuple(sorted(shapes.CLASSES)) and len(shapes.CLASSES) == 5
    for split, per_class in (('train', 4), ('val', 2)):
        assert sorted(p.name for p in (root / split).iterdir()) == list(shapes.CLASSES)
        for name in shapes.CLASSES:
            files = sorted((root / split / name).glob('*.png'))
            assert len(files) == per_class
            image = cv2.imread(str(files[0]))
            assert image.shape == (48, 48, 3) and image.std() > 10  # a shape on a background
        # mmpretrain's folder layout: classes from the sub-folders, labels in CLASSES order.
        dataset = CustomDataset(data_root=str(root), data_prefix=split, pipeline=[])
        assert dataset.metainfo['classes'] == shapes.CLASSES
        assert len(dataset) == per_class * len(shapes.CLASSES)
        for index in range(len(dataset)):
            info = dataset.get_data_info(index)
            assert Path(info['img_path']).parent.name == shapes.CLASSES[info['gt_label']]


def test_pretrain_config_trains_and_validates(tmp_path):
    """The pretraining config as gc_demo.py runs it (the Runner, its pipeline, schedulers and
    evaluator) on a tiny dataset: one training step, one validation, the checkpoint saved."""
    from mmengine.runner import Runner
    data_root = str(shapes.make_dataset(tmp_path / 'data', train=1, val=1, seed=0)) + '/'
    cfg = Config.fromfile(str(PRETRAIN))
    assert cfg.default_scope == 'mmpretrain' and cfg.model.type == 'ImageClassifier'
    assert cfg.model.backbone.type == 'ResNet' and cfg.model.backbone.depth == 18
    assert cfg.optim_wrapper.optimizer.type == 'SGD'      # the same for both detection runs
    assert cfg.custom_imports == dict(imports=['mmgc'], allow_failed_imports=False)
    assert cfg.model.head.num_classes == cfg.data_preprocessor.num_classes == len(shapes.CLASSES)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.train_dataloader.batch_size = 5
    for loader in ('train_dataloader', 'val_dataloader'):
        cfg[loader].dataset.data_root = data_root
    cfg.train_cfg.update(max_epochs=1, val_interval=1)
    cfg.default_hooks.checkpoint.interval = 1
    cfg.log_level = 'WARNING'
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 1
    metrics = runner.message_hub.log_scalars
    assert 0 <= metrics['val/accuracy/top1'].current() <= 100
    assert (tmp_path / 'work' / 'epoch_1.pth').is_file()


@pytest.mark.parametrize('model', ['mask-rcnn', 'faster-rcnn'])
def test_pretrained_backbone_fits_the_detector_backbone(model):
    """mmpretrain's ResNet-18 (the classifier's backbone.*) and mmdet's (the detector's) have
    the same tensors: names and shapes, parameters and buffers."""
    from mmdet.registry import MODELS as DET_MODELS
    from mmpretrain.registry import MODELS as CLS_MODELS
    classifier = CLS_MODELS.build(Config.fromfile(str(PRETRAIN)).model)
    cfg = Config.fromfile(str(DEMO / f'{model}_r18_fpn_synthetic.py'))
    detector = DET_MODELS.build(cfg.model)
    ours = {k: v.shape for k, v in classifier.state_dict().items() if k.startswith('backbone.')}
    theirs = {f'backbone.{k}': v.shape for k, v in detector.backbone.state_dict().items()}
    assert len(theirs) > 100
    assert ours == theirs
