# Schedule and runtime of the demo configs: mmdet's 1x schedule and default runtime, shortened to
# 8 epochs of the synthetic dataset (75 iterations of batch 4), with the same SGD as mmdet's
# (the GC twins change only its type). About 3 (Faster) to 4 (Mask R-CNN) minutes on 2 cores.
_base_ = ['mmdet::_base_/schedules/schedule_1x.py', 'mmdet::_base_/default_runtime.py']

max_epochs = 8
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=max_epochs, milestones=[6, 7],
         gamma=0.1)
]
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=1e-4))
auto_scale_lr = dict(enable=False, base_batch_size=4)
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
# What GC does in the run (gc/* curves in the logs and in make demo's plots): every 25 of the
# 600 iterations, in the baseline as in the GC twin.
custom_hooks = [dict(type='GCStatsHook', interval=25)]
