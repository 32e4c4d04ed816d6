"""Folding BatchNorm into the preceding convolution (for post-training quantization)."""

from __future__ import annotations

import torch
import torch.fx
from torch import nn

from robquant.models.surgery import replace_module


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """Names of (Conv2d, BatchNorm2d) pairs where the BN reads only that conv's output.

    Found by tracing ``model`` with torch.fx; pre-activation layouts (BN before conv) have none.
    """
    graph = torch.fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        src = node.args[0]
        if (isinstance(src, torch.fx.Node) and src.op == "call_module"
                and isinstance(modules.get(src.target), nn.Conv2d) and len(src.users) == 1):
            pairs.append((str(src.target), str(node.target)))
    return pairs


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> list[tuple[str, str]]:
    """Fold every eval-mode BN into its conv, in place: w <- gamma w / sqrt(var + eps),
    b <- beta + (b - mu) gamma / sqrt(var + eps); the BN becomes Identity.

    Returns:
        The folded (conv, bn) name pairs.
    """
    pairs = conv_bn_pairs(model)
    modules = dict(model.named_modules())
    for conv_name, bn_name in pairs:
        conv, bn = modules[conv_name], modules[bn_name]
        factor = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C,)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight.mul_(factor.view(-1, 1, 1, 1))
        conv.bias = nn.Parameter(bn.bias + (bias - bn.running_mean) * factor)
        replace_module(model, bn_name, nn.Identity())
    return pairs
