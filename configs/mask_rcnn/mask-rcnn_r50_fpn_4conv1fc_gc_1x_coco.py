# Mask R-CNN R50-FPN, 4conv1fc box head, 1x, COCO, SGD with Gradient Centralization (SGDGC): the GC
# run of the GC paper (Yong et al., ECCV 2020), Table 9 row "R50 (4c1f)". Identical to
# ./mask-rcnn_r50_fpn_4conv1fc_1x_coco.py except for the optimizer type.
# Train: bash tools/dist_train.sh configs/mask_rcnn/mask-rcnn_r50_fpn_4conv1fc_gc_1x_coco.py 8
_base_ = './mask-rcnn_r50_fpn_4conv1fc_1x_coco.py'

optim_wrapper = dict(optimizer=dict(type='SGDGC'))
