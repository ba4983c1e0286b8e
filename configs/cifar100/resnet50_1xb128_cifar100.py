# ResNet-50 on CIFAR-100, SGD with momentum (SGDM): the baseline of the GC paper (Yong et al.,
# ECCV 2020), Table 2 column "SGDM" (also Table 3 wd 5e-4 and Table 4 SGDM lr 0.1). It is
# mmpretrain 1.2.0's resnet/resnet50_8xb16_cifar100.py plus mmgc, with the paper's training:
# 1 GPU x 128 images, SGD lr 0.1, momentum 0.9, wd 5e-4, 200 epochs, lr x0.1 at epochs 60, 120
# and 180. The other Table 2 baselines change only its optimizer.
# Train: python tools/train.py configs/cifar100/resnet50_1xb128_cifar100.py
_base_ = 'mmpretrain::resnet/resnet50_8xb16_cifar100.py'

custom_imports = dict(imports=['mmgc'], allow_failed_imports=False)

# The paper's values where mmpretrain's differ (16 images per GPU, lr x0.2 at 60, 120, 160).
train_dataloader = dict(batch_size=128)
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=0.0005))
param_scheduler = dict(
    type='MultiStepLR', by_epoch=True, milestones=[60, 120, 180], gamma=0.1)
