# ResNet-50 on CIFAR-100, SGDW: the baseline of the GC paper (Yong et al., ECCV 2020), Table 2
# column "SGDW". Identical to ./resnet50_1xb128_cifar100.py (the SGDM baseline) except for the
# optimizer: SGDW, lr 0.1, momentum 0.9, decoupled wd 1e-3; other hyper-parameters torch's
# defaults.
# Train: python tools/train.py configs/cifar100/resnet50_sgdw_1xb128_cifar100.py
_base_ = './resnet50_1xb128_cifar100.py'

# torch has no SGDW: mmgc's SGDWGC with GC off is SGD with decoupled weight decay.
optim_wrapper = dict(
    optimizer=dict(
        _delete_=True,
        type='SGDWGC',
        use_gc=False,
        lr=0.1,
        momentum=0.9,
        weight_decay=0.001))
