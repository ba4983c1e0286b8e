# ResNeXt-29 4x64d on CIFAR-100, plain SGD: the baseline of the GC paper (Yong et al., ECCV
# 2020), Table 1 row "ResNeXt-29 4x64d". mmpretrain 1.2.0's CIFAR-100 data, schedule and runtime
# plus mmgc, whose ResNeXtCIFAR backbone (mmgc/models/cifar.py) mmpretrain lacks, with the
# paper's training: 1 GPU x 128 images, SGD lr 0.1, momentum 0.9, wd 5e-4, 200 epochs, lr x0.1
# at epochs 60, 120 and 180.
# Train: python tools/train.py configs/cifar100/resnext29-4x64d_1xb128_cifar100.py
_base_ = [
    'mmpretrain::_base_/datasets/cifar100_bs16.py',
    'mmpretrain::_base_/schedules/cifar10_bs128.py',
    'mmpretrain::_base_/default_runtime.py',
]

custom_imports = dict(imports=['mmgc'], allow_failed_imports=False)

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

# The paper's values where mmpretrain's differ (16 images per GPU, wd 1e-4, steps at 100, 150).
train_dataloader = dict(batch_size=128)
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=0.0005))
param_scheduler = dict(
    type='MultiStepLR', by_epoch=True, milestones=[60, 120, 180], gamma=0.1)
