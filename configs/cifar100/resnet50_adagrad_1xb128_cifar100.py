# ResNet-50 on CIFAR-100, Adagrad: the baseline of the GC paper (Yong et al., ECCV 2020), Table 2
# column "Adagrad". Identical to ./resnet50_1xb128_cifar100.py (the SGDM baseline) except for the
# optimizer: torch Adagrad, lr 0.01, wd 5e-4 (L2); other hyper-parameters torch's defaults.
# Train: python tools/train.py configs/cifar100/resnet50_adagrad_1xb128_cifar100.py
_base_ = './resnet50_1xb128_cifar100.py'

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='Adagrad', lr=0.01, weight_decay=0.0005))
