# The demo's ImageNet stand-in that tools/dataset_converters/synthetic_shapes_cls.py writes
# (make demo does): 64x64 images of one shape each (circle, pentagon, square, star, triangle),
# labelled by shape, in mmpretrain's CustomDataset folder layout (classes from the folder names).
# The same keys as mmpretrain's _base_/datasets/imagenet_bs32.py, and the same normalization as
# mmdet's detectors (ImageNet mean / std, BGR -> RGB), so the backbone sees the detection
# demo's pixel statistics.
dataset_type = 'CustomDataset'
data_root = 'data/synthetic_shapes_cls/'
data_preprocessor = dict(
    num_classes=5,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True,
)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=32,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix='train',
                 pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=64,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix='val',
                 pipeline=test_pipeline),
)
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
