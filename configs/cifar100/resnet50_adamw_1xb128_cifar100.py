# ResNet-50 on CIFAR-100, AdamW: the baseline of the GC paper (Yong et al., ECCV 2020), Table 2
# column "AdamW". Identical to ./resnet50_1xb128_cifar100.py (the SGDM baseline) except for the
# optimizer: torch AdamW, lr 1e-3, decoupled wd 1e-3; other hyper-parameters torch's defaults.
# Train: python tools/train.py configs/cifar100/resnet50_adamw_1xb128_cifar100.py
_base_ = './resnet50_1xb128_cifar100.py'

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=0.001, weight_decay=0.001))
