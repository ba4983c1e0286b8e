# Demo pretraining: the detection demo's ResNet-18 backbone trained as a classifier (mmpretrain's
# ImageClassifier) on the synthetic shapes, the demo's ImageNet stand-in, on a CPU in a few
# minutes. tools/misc/gc_demo.py runs it once (cached in work_dirs/demo/pretrain/) and both
# detection runs (SGD and SGDGC) start from its backbone, as the paper's runs start from an
# ImageNet backbone. Plain SGD: the pretraining is not part of the comparison.
_base_ = [
    'mmpretrain::_base_/models/resnet18.py',
    '../_base_/datasets/synthetic_shapes_cls.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmgc'], allow_failed_imports=False)

model = dict(head=dict(num_classes=5, topk=(1, )))

max_epochs = 6
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict()
test_cfg = dict()
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min=1e-3),
]
auto_scale_lr = dict(base_batch_size=32)
default_hooks = dict(logger=dict(interval=20),
                     checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
randomness = dict(seed=0)
