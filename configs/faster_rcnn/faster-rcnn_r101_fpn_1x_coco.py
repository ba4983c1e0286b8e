# Faster R-CNN R101-FPN 1x, COCO, plain SGD: the baseline of the GC paper (Yong et al., ECCV 2020),
# Table 8 row "R101". It is mmdet 3.3.0's faster_rcnn/faster-rcnn_r101_fpn_1x_coco.py plus mmgc; 8
# GPUs x 2 images, SGD lr 0.02, momentum 0.9, wd 1e-4.
# Train: bash tools/dist_train.sh configs/faster_rcnn/faster-rcnn_r101_fpn_1x_coco.py 8
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r101_fpn_1x_coco.py'

custom_imports = dict(imports=['mmgc'], allow_failed_imports=False)

# mmdet's values, stated so that this config and its GC twin visibly share them.
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001))
# lr 0.02 is for 16 images per iteration (8 GPUs x 2); `--auto-scale-lr` rescales it.
auto_scale_lr = dict(enable=False, base_batch_size=16)
