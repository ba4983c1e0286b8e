# VGG-11 (with BN) on CIFAR-100, plain SGD: the baseline of the GC paper (Yong et al., ECCV
# 2020), Table 1 row "VGG-11". mmpretrain 1.2.0's CIFAR-100 data, schedule and runtime and its
# VGG backbone plus mmgc, with the paper's training: 1 GPU x 128 images, SGD lr 0.1, momentum
# 0.9, wd 5e-4, 200 epochs, lr x0.1 at epochs 60, 120 and 180.
# Train: python tools/train.py configs/cifar100/vgg11bn_1xb128_cifar100.py
_base_ = '../_base_/cifar100_paper.py'

# The 8 convs of VGG-11 with BN and no classifier of their own (num_classes=-1): the 5 max-pools
# take 32x32 images to 512 x 1 x 1, and one linear layer classifies them.
model = dict(
    type='ImageClassifier',
    backbone=dict(type='VGG', depth=11, norm_cfg=dict(type='BN'), num_classes=-1),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=100,
        in_channels=512,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))
