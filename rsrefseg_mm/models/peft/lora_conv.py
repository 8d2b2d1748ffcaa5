"""LoRA for 2-D convolutions (e.g. SAM's image-encoder neck)."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class LoRAConv2d(nn.Module):
    """Low-rank update of an ``nn.Conv2d``: ``W0 * x + (alpha / r) B(A(x))``.

    ``A`` (``lora_down``) is a convolution with the original kernel size,
    stride, padding and dilation to ``r`` channels, ``B`` (``lora_up``) a
    1x1 convolution back to the output channels, initialised to zero so the
    wrapped layer starts as the original one (the formulation of LoRA for
    convolutions in PEFT, which the RSRefSeg authors use on SAM's neck). The
    original layer is kept (``original_layer``, frozen) and its state-dict
    keys move under it, as mmpretrain's ``LoRALinear`` does for linears.

    In eval mode under ``torch.no_grad`` / ``inference_mode`` the update is
    merged into one convolution with ``W0 + (alpha / r) B A`` (B is 1x1, so
    the product is ``einsum('or,rikl->oikl')``), rebuilt at each call.

    Args:
        original_layer (nn.Conv2d): Layer to adapt (groups must be 1).
        alpha (float): LoRA scale alpha.
        rank (int): LoRA rank r.
        drop_rate (float): Dropout on the LoRA branch input.
    """

    def __init__(self,
                 original_layer: nn.Conv2d,
                 alpha: float = 1,
                 rank: int = 1,
                 drop_rate: float = 0.) -> None:
        super().__init__()
        if original_layer.groups != 1:
            raise ValueError('LoRAConv2d supports groups=1 only, got '
                             f'{original_layer.groups}')
        if rank <= 0:
            raise ValueError(f'LoRA rank must be positive, got {rank}')
        conv = original_layer
        self.lora_dropout = nn.Dropout(drop_rate)
        self.lora_down = nn.Conv2d(
            conv.in_channels,
            rank,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            bias=False)
        self.lora_up = nn.Conv2d(rank, conv.out_channels, 1, bias=False)
        self.scaling = alpha / rank
        nn.init.kaiming_uniform_(self.lora_down.weight, a=5**0.5)
        nn.init.zeros_(self.lora_up.weight)
        self.original_layer = conv

    def merged_weight(self) -> torch.Tensor:
        """``W0 + (alpha / r) B A`` of shape (out, in, kh, kw)."""
        delta = torch.einsum('or,rikl->oikl', self.lora_up.weight[:, :, 0, 0],
                             self.lora_down.weight)
        return self.original_layer.weight + self.scaling * delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H', W')."""
        conv = self.original_layer
        if self.training or torch.is_grad_enabled():
            lora = self.lora_up(self.lora_down(self.lora_dropout(x)))
            return conv(x) + self.scaling * lora
        return F.conv2d(x, self.merged_weight(), conv.bias, conv.stride,
                        conv.padding, conv.dilation)
