# ResNet-101 with GroupNorm (32 groups) on ImageNet-1k, plain SGD: the baseline of the GC paper
# (Yong et al., ECCV 2020), Table 5 column "R101 GN". Identical to ./resnet101_8xb32_in1k.py
# except that every BN of the backbone is a GN with 32 groups.
# Train: bash tools/dist_train.sh configs/imagenet/resnet101-gn_8xb32_in1k.py 8
_base_ = './resnet101_8xb32_in1k.py'

model = dict(
    backbone=dict(norm_cfg=dict(type='GN', num_groups=32, requires_grad=True)))
