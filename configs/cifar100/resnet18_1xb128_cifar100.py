# ResNet-18 on CIFAR-100, plain SGD: the baseline of the GC paper (Yong et al., ECCV 2020),
# Table 1 row "R18". mmpretrain 1.2.0's CIFAR recipe (ResNet_CIFAR, CIFAR-100 data, runtime,
# 200 epochs) plus mmgc, with the paper's training: 1 GPU x 128 images, SGD lr 0.1, momentum
# 0.9, wd 5e-4, lr x0.1 at epochs 60, 120 and 180.
# Train: python tools/train.py configs/cifar100/resnet18_1xb128_cifar100.py
_base_ = [
    'mmpretrain::_base_/models/resnet18_cifar.py',
    '../_base_/cifar100_paper.py',
]

model = dict(head=dict(num_classes=100))
