# ImageNet ResNet-50 fine-tuned on CUB-200-2011, SGDGC with Gradient Centralization on conv and fc
# weights (the authors' fine-grained script used SGD_GC, not the conv-only SGD_GCC): the GC
# run of the GC paper (Yong et al., ECCV 2020), Table 7 row "CUB-200-2011". Identical to
# ./resnet50_4xb64_cub.py except for the optimizer.
# Train: bash tools/dist_train.sh configs/fine_grained/resnet50_gc_4xb64_cub.py 4
_base_ = './resnet50_4xb64_cub.py'

optim_wrapper = dict(optimizer=dict(type='SGDGC', gc_conv_only=False))
