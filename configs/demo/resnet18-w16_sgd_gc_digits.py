# GC twin of resnet18-w16_sgd_digits.py: only the optimizer differs.
_base_ = './resnet18-w16_sgd_digits.py'
optim_wrapper = dict(optimizer=dict(type='SGDGC'))
