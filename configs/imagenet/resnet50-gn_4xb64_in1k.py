# ResNet-50 with GroupNorm (32 groups) on ImageNet-1k, plain SGD: the baseline of the GC paper
# (Yong et al., ECCV 2020), Table 5 column "R50 GN". Identical to ./resnet50_4xb64_in1k.py
# except that every BN of the backbone is a GN with 32 groups.
# Train: bash tools/dist_train.sh configs/imagenet/resnet50-gn_4xb64_in1k.py 4
_base_ = './resnet50_4xb64_in1k.py'

model = dict(
    backbone=dict(norm_cfg=dict(type='GN', num_groups=32, requires_grad=True)))
