"""mmengine's FSDP wrapper for models with scalar parameters (RSRefSeg's
logit scales and biases), for ``FSDPStrategy`` of the ``FlexibleRunner``."""
from typing import List

import torch
import torch.distributed as torch_dist
import torch.nn as nn
from mmengine.model import MMFullyShardedDataParallel
from mmseg.registry import MODEL_WRAPPERS


def scalar_parameters(module: nn.Module) -> List[nn.Parameter]:
    """The 0-d parameters of ``module`` (each once)."""
    seen, out = set(), []
    for p in module.parameters():
        if p.dim() == 0 and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def _average_grad(param: torch.Tensor) -> None:
    """Post-accumulate-grad hook: the mean of the ranks' gradients (what
    FSDP's reduce-scatter gives the sharded parameters; gloo has no AVG)."""
    if param.grad is not None and torch_dist.is_initialized():
        torch_dist.all_reduce(param.grad)
        param.grad.div_(torch_dist.get_world_size())


@MODEL_WRAPPERS.register_module()
class ScalarSafeFSDP(MMFullyShardedDataParallel):
    """``MMFullyShardedDataParallel`` that leaves 0-d parameters unsharded.

    PyTorch's FSDP refuses scalar parameters ("FSDP doesn't support scalar
    parameters"); RSRefSeg has several: the text-image logit scale and bias
    of the towers (``backbone.logit_scale`` / ``logit_bias``) and the
    region-text loss scale and bias of RSRefSeg 2's prompter
    (``neck.region_text_logit_scale`` / ``_bias``). Reshaping them to (1,)
    would change the checkpoints, so this wrapper hands them to FSDP as
    ``ignored_states``: every rank keeps the whole scalar, and a trainable
    one gets its gradient averaged over the ranks after backward (FSDP
    leaves ignored parameters alone), so the ranks stay equal, as data
    parallel training keeps them. Everything else is sharded as by
    ``MMFullyShardedDataParallel``.

    Config (``FSDPStrategy``)::

        strategy = dict(
            type='FSDPStrategy',
            model_wrapper=dict(type='ScalarSafeFSDP', use_orig_params=True))

    Args:
        module (nn.Module): The model.
        **kwargs: Arguments of ``MMFullyShardedDataParallel`` (an
            ``ignored_states`` list is extended with the scalars).
    """

    def __init__(self, module: nn.Module, **kwargs) -> None:
        scalars = scalar_parameters(module)
        ignored = list(kwargs.pop('ignored_states', None) or [])
        ignored += [p for p in scalars if all(p is not q for q in ignored)]
        super().__init__(module, ignored_states=ignored or None, **kwargs)
        self.synced_scalars = [p for p in scalars if p.requires_grad]
        for p in self.synced_scalars:
            p.register_post_accumulate_grad_hook(_average_grad)
