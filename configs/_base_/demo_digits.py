# Data, schedule and runtime shared by the classification demo configs (`make demo-cls`):
# scikit-learn's handwritten digits (1,797 real 8x8 grey images; mmgc.datasets.DigitsDataset),
# 1,257 to train and a fixed, stratified 540 (54 per digit) to test, through mmpretrain's
# pipeline, classifier, Accuracy metric and default runtime; 12 epochs unless a model config says
# otherwise. Each model config sets the model, the input size (`img_size`, its pipelines) and the
# optimizer; its GC twin changes the optimizer type only.
_base_ = 'mmpretrain::_base_/default_runtime.py'
custom_imports = dict(imports=['mmgc'], allow_failed_imports=False)

# pixel statistics of the training split (0-255 grey)
data_preprocessor = dict(num_classes=10, mean=[78.06], std=[95.98], to_rgb=False)
train_dataloader = dict(
    batch_size=64,
    num_workers=0,
    dataset=dict(type='DigitsDataset', split='train', pipeline=[dict(type='PackInputs')]),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=270,
    num_workers=0,
    dataset=dict(type='DigitsDataset', split='test', pipeline=[dict(type='PackInputs')]),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

max_epochs = 12
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict()
test_cfg = dict()
param_scheduler = dict(type='CosineAnnealingLR', by_epoch=True, T_max=max_epochs)
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
randomness = dict(seed=0)
