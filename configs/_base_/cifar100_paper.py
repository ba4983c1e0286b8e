# The GC paper's CIFAR-100 training (Yong et al., ECCV 2020, Table 1), shared by the Table 1
# baselines of configs/cifar100/: mmpretrain 1.2.0's CIFAR-100 data, schedule and runtime plus
# mmgc, with the paper's values where mmpretrain's differ: 1 GPU x 128 images (mmpretrain: 8 x
# 16), SGD lr 0.1, momentum 0.9, wd 5e-4 (mmpretrain: 1e-4), 200 epochs, lr x0.1 at epochs 60,
# 120 and 180 (mmpretrain: at 100 and 150). A config on it adds the model.
_base_ = [
    'mmpretrain::_base_/datasets/cifar100_bs16.py',
    'mmpretrain::_base_/schedules/cifar10_bs128.py',
    'mmpretrain::_base_/default_runtime.py',
]

custom_imports = dict(imports=['mmgc'], allow_failed_imports=False)

train_dataloader = dict(batch_size=128)
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=0.0005))
param_scheduler = dict(
    type='MultiStepLR', by_epoch=True, milestones=[60, 120, 180], gamma=0.1)
