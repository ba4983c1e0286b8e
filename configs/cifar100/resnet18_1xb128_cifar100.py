# ResNet-18 on CIFAR-100, plain SGD: the baseline of the GC paper (Yong et al., ECCV 2020),
# Table 1 row "R18". mmpretrain 1.2.0's CIFAR recipe (ResNet_CIFAR, CIFAR-100 data, runtime,
# 200 epochs) plus mmgc, with the paper's training: 1 GPU x 128 images, SGD lr 0.1, momentum
# 0.9, wd 5e-4, lr x0.1 at epochs 60, 120 and 180.
# Train: python tools/train.py configs/cifar100/resnet18_1xb128_cifar100.py
_base_ = [
    'mmpretrain::_base_/models/resnet18_cifar.py',
    'mmpretrain::_base_/datasets/cifar100_bs16.py',
    'mmpretrain::_base_/schedules/cifar10_bs128.py',
    'mmpretrain::_base_/default_runtime.py',
]

custom_imports = dict(imports=['mmgc'], allow_failed_imports=False)

model = dict(head=dict(num_classes=100))

# The paper's values where mmpretrain's differ (16 images per GPU, wd 1e-4, steps at 100, 150).
train_dataloader = dict(batch_size=128)
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=0.0005))
param_scheduler = dict(
    type='MultiStepLR', by_epoch=True, milestones=[60, 120, 180], gamma=0.1)
