# ResNet-50 (GN) on ImageNet-1k, SGDGC with Gradient Centralization on conv weights: the GC
# run of the GC paper (Yong et al., ECCV 2020), Table 5 column "R50 GN". Identical to
# ./resnet50-gn_4xb64_in1k.py except for the optimizer.
# Train: bash tools/dist_train.sh configs/imagenet/resnet50-gn_gc_4xb64_in1k.py 4
_base_ = './resnet50-gn_4xb64_in1k.py'

optim_wrapper = dict(optimizer=dict(type='SGDGC', gc_conv_only=True))
