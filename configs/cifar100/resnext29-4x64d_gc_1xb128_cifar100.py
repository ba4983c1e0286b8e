# ResNeXt-29 4x64d on CIFAR-100, SGDGC with Gradient Centralization on conv weights: the GC run of
# the GC paper (Yong et al., ECCV 2020), Table 1 row "ResNeXt-29 4x64d". Identical to
# ./resnext29-4x64d_1xb128_cifar100.py except for the optimizer.
# Train: python tools/train.py configs/cifar100/resnext29-4x64d_gc_1xb128_cifar100.py
_base_ = './resnext29-4x64d_1xb128_cifar100.py'

optim_wrapper = dict(optimizer=dict(type='SGDGC', gc_conv_only=True))
