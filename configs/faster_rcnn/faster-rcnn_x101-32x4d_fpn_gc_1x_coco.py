# Faster R-CNN X101-32x4d-FPN 1x, COCO, SGD with Gradient Centralization (SGDGC): the GC run of the
# GC paper (Yong et al., ECCV 2020), Table 8 row "X101-32x4d". Identical to
# ./faster-rcnn_x101-32x4d_fpn_1x_coco.py except for the optimizer type.
# Train: bash tools/dist_train.sh configs/faster_rcnn/faster-rcnn_x101-32x4d_fpn_gc_1x_coco.py 8
_base_ = './faster-rcnn_x101-32x4d_fpn_1x_coco.py'

optim_wrapper = dict(optimizer=dict(type='SGDGC'))
