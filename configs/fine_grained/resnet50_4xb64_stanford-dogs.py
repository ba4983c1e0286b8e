# ImageNet ResNet-50 fine-tuned on Stanford Dogs, plain SGD: the baseline of the GC paper (Yong
# et al., ECCV 2020), Table 7 row "Stanford Dogs". Identical to ./resnet50_4xb64_cub.py except
# for the data: 120 classes, 12,000 train / 8,580 test images, read by mmpretrain's
# CustomDataset from annotation lists (`<image under Images/> <label 0-119>` per line; see
# configs/README.md for how to write them from the dataset's train_list.mat / test_list.mat).
# Train: bash tools/dist_train.sh configs/fine_grained/resnet50_4xb64_stanford-dogs.py 4
_base_ = './resnet50_4xb64_cub.py'

model = dict(head=dict(num_classes=120))
data_preprocessor = dict(num_classes=120)
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='CustomDataset',
        data_root='data/stanford_dogs',
        ann_file='meta/train.txt',
        data_prefix='Images',
        pipeline={{_base_.train_pipeline}}))
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='CustomDataset',
        data_root='data/stanford_dogs',
        ann_file='meta/test.txt',
        data_prefix='Images',
        pipeline={{_base_.test_pipeline}}))
test_dataloader = val_dataloader
