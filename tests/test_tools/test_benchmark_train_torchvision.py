"""tools/analysis_tools/benchmark_train_torchvision.py: a real (tiny) run of torchvision's Mask
R-CNN on the CPU, its synthetic batches and its arguments."""
import contextlib
import io
import re

import pytest
import torch

from ..test_configs.test_demo_configs import load_tool

NUMBER = r'(\d+(?:\.\d+)?)'


@pytest.fixture(scope='module')
def tool():
    return load_tool('tools/analysis_tools/benchmark_train_torchvision.py')


@pytest.fixture(scope='module')
def report(tool):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        tool.main(['--image-size', '128', '128', '--images-per-batch', '1', '--warmup', '1',
                   '--iters', '2'])
    return out.getvalue()


def test_table(report):
    out = report
    assert re.search(r'^device: cpu \(CPU, \d+ threads\)  torch \S+  torchvision \S+  mmgc \S+$',
                     out, re.M), out
    assert re.search(r'maskrcnn_resnet50_fpn .*trainable tensors: \d+  values: 44\.\d M', out)
    assert ('2 interleaved pairs (same batch of 1 images of 128x128 and same weights, '
            'alternating order) after 1 warm-up pairs') in out
    header = next(line for line in out.splitlines() if line.startswith('variant'))
    for column in ('optimizer', 'iteration ms', 'step ms', 'step share', 'ratio'):
        assert column in header
    assert 'MiB' not in header  # memory is measured on CUDA only
    rows = {}
    for name, optimizer in (('baseline', 'torch.SGD'), ('GC', 'mmgc.SGDGC')):
        found = re.findall(rf'^{name} +{re.escape(optimizer)} +{NUMBER} +{NUMBER} +{NUMBER}% '
                           rf'+{NUMBER} +{NUMBER}->{NUMBER}$', out, re.M)
        assert len(found) == 1, out
        rows[name] = [float(value) for value in found[0]]
    for iteration, step, share, ratio, loss_first, loss_last in rows.values():
        assert iteration > 0 and 0 < step < iteration and ratio > 0
        assert share == pytest.approx(100 * step / iteration, abs=0.1)
        assert loss_first > 0 and loss_last > 0
    assert rows['baseline'][3] == 1.0
    assert rows['GC'][3] == pytest.approx(rows['GC'][0] / rows['baseline'][0], abs=2e-3)
    # The same weights and batch in each pair: the same loss.
    assert rows['GC'][4] == pytest.approx(rows['baseline'][4], rel=1e-3)
    headline = re.search(rf'with GC / without \(median of 2 same-batch pairs\): {NUMBER}  '
                         rf'\(quartiles {NUMBER} \.\. {NUMBER}', out)
    assert headline, out
    ratio, q1, q3 = map(float, headline.groups())
    assert 0 < q1 <= ratio <= q3
    cost = re.search(r'GC step cost: ([-+]\d+\.\d+) ms per iteration', out)
    assert cost and float(cost.group(1)) == pytest.approx(rows['GC'][1] - rows['baseline'][1],
                                                          abs=0.02)


def test_synthetic_batch(tool):
    imgs, targets = tool.make_batch(3, 64, 96, seed=5)
    assert len(imgs) == len(targets) == 3
    for img, target in zip(imgs, targets):
        assert img.shape == (3, 64, 96) and 0 <= img.min() and img.max() <= 1
        boxes, labels, masks = target['boxes'], target['labels'], target['masks']
        count = len(boxes)
        assert 2 <= count <= 6 and labels.shape == (count,) and masks.shape == (count, 64, 96)
        assert ((labels >= 1) & (labels < tool.NUM_CLASSES)).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all() and (boxes >= 0).all()
        assert (boxes[:, 2] <= 96).all() and (boxes[:, 3] <= 64).all()
        for box, mask in zip(boxes.long().tolist(), masks):
            x1, y1, x2, y2 = box
            assert mask.sum() == (x2 - x1) * (y2 - y1) == mask[y1:y2, x1:x2].sum()
    again = tool.make_batch(3, 64, 96, seed=5)
    assert all(torch.equal(a, b) for a, b in zip(imgs, again[0]))


def test_resident_bytes_counts_each_storage_once(tool):
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    assert tool.resident_bytes(model, optimizer) == (12 + 3) * 4
    model(torch.ones(2, 4)).sum().backward()
    optimizer.step()  # gradients and momentum buffers: three times the parameters
    assert tool.resident_bytes(model, optimizer) == 3 * (12 + 3) * 4


@pytest.mark.parametrize('argv', [['--iters', '0'], ['--image-size', '16', '16'],
                                  ['--images-per-batch', '0'], ['--device', 'tpu']])
def test_bad_arguments(tool, argv):
    with pytest.raises(SystemExit):
        tool.parse_args(argv)
