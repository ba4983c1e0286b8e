# GC twin of mask-rcnn_r18_fpn_synthetic.py: only the optimizer differs.
_base_ = './mask-rcnn_r18_fpn_synthetic.py'
optim_wrapper = dict(optimizer=dict(type='SGDGC'))
