# GC twin of lenet5_adamw_digits.py: only the optimizer differs.
_base_ = './lenet5_adamw_digits.py'
optim_wrapper = dict(optimizer=dict(type='AdamWGC'))
