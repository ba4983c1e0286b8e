# Classification demo, setting 1: a slim ResNet-18 with BN (mmpretrain's ResNet_CIFAR: 3x3 stem,
# no max-pool; 16 base channels instead of 64) from scratch on the digits, upsampled to 16x16,
# with SGD (lr 0.1 as mmpretrain's CIFAR schedule, momentum 0.9, wd 5e-4) and a cosine schedule.
# Its GC twin: resnet18-w16_sgd_gc_digits.py.
_base_ = '../_base_/demo_digits.py'

img_size = 16
train_pipeline = [
    dict(type='Resize', scale=(img_size, img_size)),
    dict(type='RandomCrop', crop_size=img_size, padding=2),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='Resize', scale=(img_size, img_size)), dict(type='PackInputs')]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

model = dict(
    type='ImageClassifier',
    backbone=dict(type='ResNet_CIFAR', depth=18, in_channels=1, stem_channels=16,
                  base_channels=16, num_stages=4, out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=128,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4))
