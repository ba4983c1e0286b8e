# Mask R-CNN R50-FPN, GN+WS everywhere, 2x, COCO, SGD with Gradient Centralization (SGDGC): the GC
# run of the GC paper (Yong et al., ECCV 2020), Table 9 row "R50GN+WS". Identical to
# ./mask-rcnn_r50_fpn_gn-ws-all_2x_coco.py except for the optimizer type.
# Train: bash tools/dist_train.sh configs/gn+ws/mask-rcnn_r50_fpn_gn-ws-all_gc_2x_coco.py 8
_base_ = './mask-rcnn_r50_fpn_gn-ws-all_2x_coco.py'

optim_wrapper = dict(optimizer=dict(type='SGDGC'))
