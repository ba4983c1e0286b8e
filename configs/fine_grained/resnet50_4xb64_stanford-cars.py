# ImageNet ResNet-50 fine-tuned on Stanford Cars, plain SGD: the baseline of the GC paper (Yong
# et al., ECCV 2020), Table 7 row "Stanford Cars". Identical to ./resnet50_4xb64_cub.py except
# for the data: mmpretrain's StanfordCars, 196 classes, 8,144 train / 8,041 test images.
# Train: bash tools/dist_train.sh configs/fine_grained/resnet50_4xb64_stanford-cars.py 4
_base_ = './resnet50_4xb64_cub.py'

model = dict(head=dict(num_classes=196))
data_preprocessor = dict(num_classes=196)
train_dataloader = dict(
    dataset=dict(
        type='StanfordCars', data_root='data/Stanford_Cars', split='train'))
val_dataloader = dict(
    dataset=dict(
        type='StanfordCars', data_root='data/Stanford_Cars', split='test'))
test_dataloader = val_dataloader
