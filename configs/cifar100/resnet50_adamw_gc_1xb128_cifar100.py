# ResNet-50 on CIFAR-100, AdamWGC with Gradient Centralization on conv weights: the GC run of the GC
# paper (Yong et al., ECCV 2020), Table 2 column "AdamW". Identical to
# ./resnet50_adamw_1xb128_cifar100.py except for the optimizer.
# Train: python tools/train.py configs/cifar100/resnet50_adamw_gc_1xb128_cifar100.py
_base_ = './resnet50_adamw_1xb128_cifar100.py'

optim_wrapper = dict(optimizer=dict(type='AdamWGC', gc_conv_only=True))
