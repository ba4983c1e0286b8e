# ResNet-101 (BN) on ImageNet-1k, SGDGC with Gradient Centralization on conv weights: the GC
# run of the GC paper (Yong et al., ECCV 2020), Table 5 column "R101 BN". Identical to
# ./resnet101_8xb32_in1k.py except for the optimizer.
# Train: bash tools/dist_train.sh configs/imagenet/resnet101_gc_8xb32_in1k.py 8
_base_ = './resnet101_8xb32_in1k.py'

optim_wrapper = dict(optimizer=dict(type='SGDGC', gc_conv_only=True))
