# ImageNet ResNet-50 fine-tuned on FGVC-Aircraft, plain SGD: the baseline of the GC paper (Yong
# et al., ECCV 2020), Table 7 row "FGVC Aircraft". Identical to ./resnet50_4xb64_cub.py except
# for the data: mmpretrain's FGVCAircraft (variants), 100 classes, 6,667 trainval / 3,333 test
# images.
# Train: bash tools/dist_train.sh configs/fine_grained/resnet50_4xb64_fgvc-aircraft.py 4
_base_ = './resnet50_4xb64_cub.py'

model = dict(head=dict(num_classes=100))
data_preprocessor = dict(num_classes=100)
train_dataloader = dict(
    dataset=dict(
        type='FGVCAircraft',
        data_root='data/fgvc-aircraft-2013b',
        split='trainval'))
val_dataloader = dict(
    dataset=dict(
        type='FGVCAircraft', data_root='data/fgvc-aircraft-2013b', split='test'))
test_dataloader = val_dataloader
