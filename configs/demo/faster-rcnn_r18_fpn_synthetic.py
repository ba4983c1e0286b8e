# Demo: Faster R-CNN, a slim ResNet-18 FPN trained from scratch (init_cfg=None) on the synthetic
# COCO dataset, on a CPU in minutes. The same mmdet bases as the real Faster R-CNN configs, with
# the synthetic dataset in place of COCO. `make demo MODEL=faster` trains it and its GC twin.
_base_ = [
    'mmdet::_base_/models/faster-rcnn_r50_fpn.py',
    '../_base_/datasets/synthetic_coco_detection.py',
    '../_base_/demo_schedule.py',
]
custom_imports = dict(imports=['mmgc'], allow_failed_imports=False)

channels = 64
model = dict(
    backbone=dict(depth=18, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=channels),
    rpn_head=dict(in_channels=channels, feat_channels=channels),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=channels),
        bbox_head=dict(in_channels=channels, fc_out_channels=256, num_classes=3)),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=128)),
        rpn_proposal=dict(nms_pre=500, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100), rcnn=dict(max_per_img=20)))
