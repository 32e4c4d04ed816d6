"""A ResNet-20 for CIFAR written for the benchmarks alone: no robquant model code, so a benchmark that
times robquant's training beside it compares our whole path with an independent loop.

He et al. 2016, sec. 4.2: a 3x3 stem of 16 channels, three stages of three basic blocks (16, 32, 64
channels), the parameter-free option-A shortcut (subsample and zero-pad), global average pooling, a
linear head; inputs in [0, 1], normalised inside.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.stride, self.pad = stride, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.b1(self.c1(x)))
        out = self.b2(self.c2(out))
        short = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        if self.pad:
            short = F.pad(short, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + short)


class BareResNet20(nn.Module):
    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], classes: int = 10) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))
        self.stem = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        blocks, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                blocks.append(Block(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.stem((x - self.mean) / self.std)))
        x = self.blocks(x)
        return self.fc(x.mean((2, 3)))


def pgd_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step: float, steps: int,
             gen: torch.Generator) -> torch.Tensor:
    """Madry's PGD for training: random start, ``steps`` signed-gradient steps, the last iterate."""
    delta = (torch.rand(x.shape, generator=gen, device=x.device) * 2 - 1) * eps
    x_adv = (x + delta).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + step * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()
