# DenseNet-121 on CIFAR-100, plain SGD: the baseline of the GC paper (Yong et al., ECCV 2020),
# Table 1 row "DenseNet-121". mmpretrain 1.2.0's CIFAR-100 data, schedule and runtime plus mmgc,
# whose DenseNetCIFAR backbone (mmgc/models/cifar.py) mmpretrain lacks, with the paper's
# training: 1 GPU x 128 images, SGD lr 0.1, momentum 0.9, wd 5e-4, 200 epochs, lr x0.1 at
# epochs 60, 120 and 180.
# Train: python tools/train.py configs/cifar100/densenet121_1xb128_cifar100.py
_base_ = '../_base_/cifar100_paper.py'

# 3x3 stem conv (64 channels, stride 1, no max-pool), dense blocks of 6 / 12 / 24 / 16 layers,
# growth 32, bottleneck 4 x 32, transitions keeping half of the channels; 1024 features.
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='DenseNetCIFAR',
        depth=121,
        growth_rate=32,
        bn_size=4,
        compression=0.5),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=100,
        in_channels=1024,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))
