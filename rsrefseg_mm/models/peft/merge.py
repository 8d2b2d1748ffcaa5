"""Fold LoRA updates into plain layers (deployment)."""
import copy

import torch
import torch.nn as nn
from mmpretrain.models.peft.lora import LoRALinear

from .lora_conv import LoRAConv2d


@torch.no_grad()
def merge_lora(module: nn.Module) -> int:
    """Replace every LoRA layer of ``module`` by its merged plain layer.

    ``LoRALinear`` becomes an ``nn.Linear`` with ``W0 + (alpha / r) B A``,
    :class:`LoRAConv2d` an ``nn.Conv2d`` with its merged kernel; the
    function of the model does not change.

    Args:
        module (nn.Module): Modified in place.

    Returns:
        int: The number of layers merged.
    """
    merged = 0
    for name, child in list(module.named_children()):
        if isinstance(child, LoRALinear):
            layer = copy.deepcopy(child.original_layer)
            layer.weight.add_(child.scaling *
                              child.lora_up.weight @ child.lora_down.weight)
        elif isinstance(child, LoRAConv2d):
            layer = copy.deepcopy(child.original_layer)
            layer.weight.copy_(child.merged_weight())
        else:
            merged += merge_lora(child)
            continue
        layer.requires_grad_(False)
        setattr(module, name, layer)
        merged += 1
    return merged
