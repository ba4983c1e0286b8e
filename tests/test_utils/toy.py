"""A tiny mmengine model and dataset for the runner-level tests of tests/test_utils."""
import torch
import torch.nn as nn
from mmengine.model import BaseModel


class ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.fc = nn.Linear(4, 1)

    def forward(self, inputs, targets=None, mode='tensor'):
        out = self.fc(self.conv(inputs).mean((2, 3))).squeeze(1)
        if mode == 'loss':
            return dict(loss=(out - targets).pow(2).mean())
        return out


class ToyDataset(torch.utils.data.Dataset):

    def __init__(self, length: int = 16):
        self.length = length

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        gen = torch.Generator().manual_seed(index)
        return dict(inputs=torch.randn(2, 5, 5, generator=gen), targets=torch.tensor(index / 8))
