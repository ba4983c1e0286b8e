# Demo: Faster R-CNN, a slim ResNet-18 FPN fine-tuned on the synthetic COCO dataset, on a CPU in
# minutes. As the paper's detectors start from an ImageNet backbone, this one starts from the
# demo's pretrained ResNet-18 (resnet18_1xb32_synthetic-shapes.py, an mmpretrain classifier of the
# synthetic shapes), loaded by mmdet's own init_cfg=dict(type='Pretrained', prefix='backbone.')
# path (mmpretrain's and mmdet's ResNet name their parameters alike). tools/misc/gc_demo.py
# writes that checkpoint once (`make demo MODEL=faster` trains this config and its GC twin from it);
# without it, set model.backbone.init_cfg=None to train from scratch. The same mmdet bases as the
# real Faster R-CNN configs, with the synthetic dataset in place of COCO.
_base_ = [
    'mmdet::_base_/models/faster-rcnn_r50_fpn.py',
    '../_base_/datasets/synthetic_coco_detection.py',
    '../_base_/demo_schedule.py',
]
custom_imports = dict(imports=['mmgc'], allow_failed_imports=False)

channels = 64
pretrained = 'work_dirs/demo/pretrain/pretrained.pth'  # gc_demo.py's cache
model = dict(
    backbone=dict(depth=18, frozen_stages=-1, norm_eval=False,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained,
                                prefix='backbone.')),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=channels),
    rpn_head=dict(in_channels=channels, feat_channels=channels),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=channels),
        bbox_head=dict(in_channels=channels, fc_out_channels=256, num_classes=6)),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=128)),
        rpn_proposal=dict(nms_pre=500, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100), rcnn=dict(max_per_img=20)))
