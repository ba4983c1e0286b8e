# Mask R-CNN R50-FPN, 4conv1fc box head, 1x, COCO, plain SGD: the baseline of the GC paper (Yong et
# al., ECCV 2020), Table 9 row "R50 (4c1f)". It is mmdet 3.3.0's
# mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py plus mmgc; 8 GPUs x 2 images, SGD lr 0.02, momentum 0.9,
# wd 1e-4.
# Train: bash tools/dist_train.sh configs/mask_rcnn/mask-rcnn_r50_fpn_4conv1fc_1x_coco.py 8
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['mmgc'], allow_failed_imports=False)
# The paper's 4conv1fc variant: only the box head's type differs from mmdet's Shared2FCBBoxHead
# (4 shared 3x3 convs with 256 channels, then one 1024-d fc; no norm, as in the base).
model = dict(roi_head=dict(bbox_head=dict(type='Shared4Conv1FCBBoxHead')))

# mmdet's values, stated so that this config and its GC twin visibly share them.
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001))
# lr 0.02 is for 16 images per iteration (8 GPUs x 2); `--auto-scale-lr` rescales it.
auto_scale_lr = dict(enable=False, base_batch_size=16)
