# ImageNet ResNet-50 fine-tuned on CUB-200-2011, plain SGD: the baseline of the GC paper (Yong
# et al., ECCV 2020), Table 7 row "CUB-200-2011". mmpretrain 1.2.0's resnet/resnet50_8xb8_cub.py
# (ResNet-50, CUB data, runtime, 100 epochs) plus mmgc, with the paper's fine-tuning: torchvision's
# ImageNet weights, short edge 512 then the center 448 x 448 (train and test), 4 GPUs x 64 images,
# SGD momentum 0.9, lr 0.1 for the classifier and 0.01 for the backbone, x0.1 at epochs 50, 80.
# Train: bash tools/dist_train.sh configs/fine_grained/resnet50_4xb64_cub.py 4
_base_ = 'mmpretrain::resnet/resnet50_8xb8_cub.py'

custom_imports = dict(imports=['mmgc'], allow_failed_imports=False)

# torchvision's ImageNet-1k ResNet-50 (V1 weights); mmpretrain's base starts from ImageNet-21k.
pretrained = 'torchvision://resnet50'
model = dict(
    backbone=dict(
        init_cfg=dict(_delete_=True, type='Pretrained', checkpoint=pretrained)))

# As the authors' script: resize the short edge to 512, keep the center 448 x 448 (train and
# test), random horizontal flips in training (the base: 600 x 600, random 448 crops).
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=512, edge='short'),
    dict(type='CenterCrop', crop_size=448),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=512, edge='short'),
    dict(type='CenterCrop', crop_size=448),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=64, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# lr 0.1 for the new classifier, 0.1 x 0.1 for the pretrained backbone; wd 1e-4 as the authors'
# script (the base: nesterov SGD lr 0.01, wd 5e-4, warm-up then cosine).
optim_wrapper = dict(
    optimizer=dict(
        _delete_=True, type='SGD', lr=0.1, momentum=0.9, weight_decay=0.0001),
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}))
param_scheduler = [
    dict(type='MultiStepLR', by_epoch=True, milestones=[50, 80], gamma=0.1)
]
# 4 GPUs x 64 images
auto_scale_lr = dict(base_batch_size=256)
