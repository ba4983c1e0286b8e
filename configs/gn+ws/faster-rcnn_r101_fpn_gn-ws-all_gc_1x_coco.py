# Faster R-CNN R101-FPN, GN+WS everywhere, 1x, COCO, SGD with Gradient Centralization (SGDGC): the
# GC run of an extra row, not in the GC paper (Yong et al., ECCV 2020). Identical to
# ./faster-rcnn_r101_fpn_gn-ws-all_1x_coco.py except for the optimizer type.
# Train: bash tools/dist_train.sh configs/gn+ws/faster-rcnn_r101_fpn_gn-ws-all_gc_1x_coco.py 8
_base_ = './faster-rcnn_r101_fpn_gn-ws-all_1x_coco.py'

optim_wrapper = dict(optimizer=dict(type='SGDGC'))
