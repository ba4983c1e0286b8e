# ResNet-50 (BN) on ImageNet-1k, plain SGD: the baseline of the GC paper (Yong et al., ECCV
# 2020), Table 5 column "R50 BN". It is mmpretrain 1.2.0's resnet/resnet50_8xb32_in1k.py plus
# mmgc, on the paper's 4 GPUs x 64 images (256 per iteration, the batch mmpretrain's lr 0.1 is
# meant for); SGD lr 0.1, momentum 0.9, wd 1e-4, 100 epochs, lr x0.1 at epochs 30, 60 and 90.
# Train: bash tools/dist_train.sh configs/imagenet/resnet50_4xb64_in1k.py 4
_base_ = 'mmpretrain::resnet/resnet50_8xb32_in1k.py'

custom_imports = dict(imports=['mmgc'], allow_failed_imports=False)

train_dataloader = dict(batch_size=64)
# mmpretrain's values (also those of the authors' ImageNet script), stated so that this config
# and its GC twin visibly share them.
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=0.0001))
