# ResNeXt-29 4x64d on CIFAR-100, plain SGD: the baseline of the GC paper (Yong et al., ECCV
# 2020), Table 1 row "ResNeXt-29 4x64d". mmpretrain 1.2.0's CIFAR-100 data, schedule and runtime
# plus mmgc, whose ResNeXtCIFAR backbone (mmgc/models/cifar.py) mmpretrain lacks, with the
# paper's training: 1 GPU x 128 images, SGD lr 0.1, momentum 0.9, wd 5e-4, 200 epochs, lr x0.1
# at epochs 60, 120 and 180.
# Train: python tools/train.py configs/cifar100/resnext29-4x64d_1xb128_cifar100.py
_base_ = '../_base_/cifar100_paper.py'

# 3x3 stem conv (64 channels, stride 1), 3 stages x 3 bottleneck blocks, 4 groups of 64
# channels in the first stage (doubling per stage), block outputs 512 / 1024 / 2048.
model = dict(
    type='ImageClassifier',
    backbone=dict(type='ResNeXtCIFAR', depth=29, cardinality=4, base_width=64),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=100,
        in_channels=2048,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))
