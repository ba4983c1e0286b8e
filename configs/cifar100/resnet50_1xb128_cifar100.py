# ResNet-50 on CIFAR-100, SGD with momentum (SGDM): the baseline of the GC paper (Yong et al.,
# ECCV 2020), Table 2 column "SGDM" (also Table 3 wd 5e-4 and Table 4 SGDM lr 0.1). It is
# mmpretrain 1.2.0's resnet/resnet50_8xb16_cifar100.py (the same model, data, schedule and
# runtime bases) with the paper's training of ../_base_/cifar100_paper.py: 1 GPU x 128 images,
# SGD lr 0.1, momentum 0.9, wd 5e-4, 200 epochs, lr x0.1 at epochs 60, 120 and 180 (mmpretrain's:
# 8 x 16 images, lr x0.2 at 60, 120, 160). The other Table 2 baselines change only its optimizer.
# Train: python tools/train.py configs/cifar100/resnet50_1xb128_cifar100.py
_base_ = [
    'mmpretrain::_base_/models/resnet50_cifar.py',
    '../_base_/cifar100_paper.py',
]

model = dict(head=dict(num_classes=100))
