# Classification demo, setting 2: mmpretrain's LeNet-5 (tanh, average pooling, no BN) from scratch
# on the digits, upsampled to its 32x32 input, with AdamW; 20 epochs (LeNet is cheap), lr chosen
# on the baseline alone. Its GC twin: lenet5_adamw_gc_digits.py.
_base_ = '../_base_/demo_digits.py'

img_size = 32
train_pipeline = [
    dict(type='Resize', scale=(img_size, img_size)),
    dict(type='RandomCrop', crop_size=img_size, padding=4),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='Resize', scale=(img_size, img_size)), dict(type='PackInputs')]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

model = dict(
    type='ImageClassifier',
    backbone=dict(type='LeNet5'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=120,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.05))

max_epochs = 20
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = dict(T_max=max_epochs)
default_hooks = dict(checkpoint=dict(interval=max_epochs))
