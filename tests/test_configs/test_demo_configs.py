"""The embedded demo: the synthetic dataset generator and the demo configs."""
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


def test_generator_writes_valid_coco_instances(tmp_path):
    from pycocotools.coco import COCO
    root = synthetic.make_dataset(tmp_path, train=20, val=5, seed=0, size=128)
    for split, count in (('train', 20), ('val', 5)):
        coco = COCO(str(root / 'annotations' / f'instances_{split}.json'))
        assert len(coco.getImgIds()) == count
        assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(synthetic.CLASSES)
        assert len(coco.getAnnIds()) >= count          # at least one object per image
        for ann in coco.loadAnns(coco.getAnnIds()):
            x, y, w, h = ann['bbox']
            assert 0 <= x and 0 <= y and x + w <= 128 and y + h <= 128 and w > 4 and h > 4
            mask = coco.annToMask(ann)
            assert mask.sum() > 0.5 * ann['area']       # the polygon is a real mask
            assert (root / split / coco.loadImgs(ann['image_id'])[0]['file_name']).exists()
    classes = {a['category_id'] for a in json.loads(
        (root / 'annotations' / 'instances_train.json').read_text())['annotations']}
    assert classes == {1, 2, 3}


@pytest.mark.parametrize('model', ['mask-rcnn', 'faster-rcnn'])
def test_demo_twins_differ_only_in_the_optimizer(model):
    baseline = Config.fromfile(str(DEMO / f'{model}_r18_fpn_synthetic.py')).to_dict()
    gc = Config.fromfile(str(DEMO / f'{model}_r18_fpn_gc_synthetic.py')).to_dict()
    assert baseline['optim_wrapper']['optimizer'].pop('type') == 'SGD'
    assert gc['optim_wrapper']['optimizer'].pop('type') == 'SGDGC'
    assert baseline == gc
    assert baseline['model']['backbone']['init_cfg'] is None   # nothing to download
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
