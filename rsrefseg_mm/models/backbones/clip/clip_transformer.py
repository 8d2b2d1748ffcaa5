"""Building blocks of OpenAI CLIP's image and text towers.

Why not mmpretrain's pieces: mmpretrain's ``CLIPTransformer`` (and the
``ResidualAttentionBlock`` it uses) wraps ``nn.MultiheadAttention``, whose
packed ``in_proj_weight`` parameter is no ``nn.Linear`` (LoRA cannot wrap it)
and whose ``out_proj`` is read as a bare weight inside the functional call
(wrapping it with ``LoRALinear`` breaks it). mmpretrain's ``VisionTransformer``
has SDPA attention with separate ``attn.qkv``/``attn.proj`` linears, but
neither QuickGELU (OpenAI CLIP's activation) nor an attention mask (needed for
the causal text tower), and its key layout (``layers.N.ffn.layers.0.0``)
differs from OpenAI's. So this module is a compact re-implementation whose
parameter names follow OpenAI's layout except for the attention, which is an
``nn.Linear`` pair ``attn.qkv`` / ``attn.proj`` (OpenAI's
``attn.in_proj_weight/bias`` and ``attn.out_proj`` are renamed on load by
``clip_checkpoint.convert_clip_state_dict``), and which runs attention
through ``torch.nn.functional.scaled_dot_product_attention`` (flash /
memory-efficient kernels on GPU; ``is_causal=True`` for the text tower).
"""
from collections import OrderedDict
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp


class QuickGELU(nn.Module):
    """OpenAI CLIP's activation ``x * sigmoid(1.702 x)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 and cast back (as CLIP, safe in fp16)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        orig_type = x.dtype
        x = F.layer_norm(x.float(), self.normalized_shape,
                         None if self.weight is None else self.weight.float(),
                         None if self.bias is None else self.bias.float(),
                         self.eps)
        return x.to(orig_type)


class CLIPAttention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` linear.

    Args:
        embed_dims (int): Token width C.
        num_heads (int): Number of heads; must divide ``embed_dims``.
        fast_attn (bool): Use ``F.scaled_dot_product_attention``; otherwise an
            explicit softmax(QK^T)V (reference path, same result).
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 fast_attn: bool = True) -> None:
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims {embed_dims} is not divisible by '
                             f'num_heads {num_heads}')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.head_dims = embed_dims // num_heads
        self.fast_attn = fast_attn
        self.qkv = nn.Linear(embed_dims, embed_dims * 3)
        self.proj = nn.Linear(embed_dims, embed_dims)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        """Self-attention.

        Args:
            x (Tensor): Tokens (B, N, C).
            causal (bool): Token i attends to tokens <= i only.

        Returns:
            Tensor: (B, N, C).
        """
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dims)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, h, N, d)
        if self.fast_attn:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        else:
            attn = (q * self.head_dims**-0.5) @ k.transpose(-2, -1)
            if causal:
                mask = torch.ones(N, N, dtype=torch.bool, device=x.device)
                attn = attn.masked_fill(~mask.tril(), float('-inf'))
            out = attn.softmax(dim=-1) @ v
        out = out.transpose(1, 2).reshape(B, N, C)
        return self.proj(out)


class CLIPResidualBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln_1(x))``, ``x + mlp(ln_2(x))``.

    Args:
        embed_dims (int): Token width C.
        num_heads (int): Attention heads.
        mlp_ratio (float): Hidden width of the MLP relative to C.
        quick_gelu (bool): QuickGELU (OpenAI weights) or exact GELU.
        fast_attn (bool): See :class:`CLIPAttention`.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 mlp_ratio: float = 4.0,
                 quick_gelu: bool = True,
                 fast_attn: bool = True) -> None:
        super().__init__()
        hidden = int(embed_dims * mlp_ratio)
        self.ln_1 = LayerNorm(embed_dims)
        self.attn = CLIPAttention(embed_dims, num_heads, fast_attn)
        self.ln_2 = LayerNorm(embed_dims)
        self.mlp = nn.Sequential(
            OrderedDict([('c_fc', nn.Linear(embed_dims, hidden)),
                         ('gelu', QuickGELU() if quick_gelu else nn.GELU()),
                         ('c_proj', nn.Linear(hidden, embed_dims))]))

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), causal=causal)
        return x + self.mlp(self.ln_2(x))


class CLIPTransformer(nn.Module):
    """A stack of :class:`CLIPResidualBlock` named ``resblocks``.

    Args:
        embed_dims (int): Token width.
        num_layers (int): Number of blocks.
        num_heads (int): Attention heads.
        quick_gelu (bool): See :class:`CLIPResidualBlock`.
        fast_attn (bool): See :class:`CLIPAttention`.
        with_cp (bool): Activation checkpointing of each block while
            training (recompute in backward, less memory).
    """

    def __init__(self,
                 embed_dims: int,
                 num_layers: int,
                 num_heads: int,
                 quick_gelu: bool = True,
                 fast_attn: bool = True,
                 with_cp: bool = False) -> None:
        super().__init__()
        self.embed_dims = embed_dims
        self.with_cp = with_cp
        self.resblocks = nn.ModuleList([
            CLIPResidualBlock(
                embed_dims,
                num_heads,
                quick_gelu=quick_gelu,
                fast_attn=fast_attn) for _ in range(num_layers)
        ])

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        """(B, N, C) -> (B, N, C)."""
        use_cp = self.with_cp and self.training and torch.is_grad_enabled()
        for blk in self.resblocks:
            if use_cp:
                x = cp.checkpoint(blk, x, causal, use_reentrant=False)
            else:
                x = blk(x, causal=causal)
        return x

    def init_weights(self) -> None:
        """CLIP's initialisation of the block weights."""
        width, layers = self.embed_dims, len(self.resblocks)
        proj_std = (width**-0.5) * ((2 * layers)**-0.5)
        attn_std = width**-0.5
        fc_std = (2 * width)**-0.5
        for blk in self.resblocks:
            nn.init.normal_(blk.attn.qkv.weight, std=attn_std)
            nn.init.zeros_(blk.attn.qkv.bias)
            nn.init.normal_(blk.attn.proj.weight, std=proj_std)
            nn.init.zeros_(blk.attn.proj.bias)
            nn.init.normal_(blk.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(blk.mlp.c_proj.weight, std=proj_std)


def resize_pos_embed(pos_embed: torch.Tensor, src_grid: Tuple[int, int],
                     dst_grid: Tuple[int, int]) -> torch.Tensor:
    """Bicubically resize a ViT positional embedding with one class token.

    Args:
        pos_embed (Tensor): (1 + Hs*Ws, C), class token first.
        src_grid (tuple[int, int]): (Hs, Ws).
        dst_grid (tuple[int, int]): (Hd, Wd).

    Returns:
        Tensor: (1 + Hd*Wd, C).
    """
    if tuple(src_grid) == tuple(dst_grid):
        return pos_embed
    cls_pos, grid_pos = pos_embed[:1], pos_embed[1:]
    C = grid_pos.shape[-1]
    grid_pos = grid_pos.reshape(1, *src_grid, C).permute(0, 3, 1, 2)
    grid_pos = F.interpolate(
        grid_pos.float(), size=dst_grid, mode='bicubic',
        align_corners=False).to(pos_embed.dtype)
    grid_pos = grid_pos.permute(0, 2, 3, 1).reshape(-1, C)
    return torch.cat([cls_pos, grid_pos], dim=0)


class CLIPVisionTower(nn.Module):
    """OpenAI CLIP ViT image tower (parameter names as OpenAI's ``visual``).

    Args:
        image_size (int): Pretraining resolution; defines the stored
            positional-embedding grid.
        patch_size (int): Patch size.
        embed_dims (int): Token width.
        num_layers (int): Transformer blocks.
        num_heads (int): Attention heads.
        output_dims (int): Width of the joint embedding space (``proj``).
        quick_gelu (bool): QuickGELU activation.
        fast_attn (bool): SDPA attention.
        with_cp (bool): Activation checkpointing of the blocks.
        stem_channels (Sequence[int], optional): A convolutional stem before
            the patch embedding (`Early convolutions help transformers see
            better <https://arxiv.org/abs/2106.14881>`_): one 3x3 stride-2
            convolution + BatchNorm + ReLU per entry, to that many channels,
            then ``conv1`` with kernel and stride ``patch_size / 2**len``
            (the token grid stays ``image_size / patch_size``). For towers
            trained from scratch on small data (the demo): a linear patch
            embedding does not learn shapes there. Not in OpenAI's
            checkpoints. None (default): OpenAI's linear patch embedding.
    """

    def __init__(self,
                 image_size: int,
                 patch_size: int,
                 embed_dims: int,
                 num_layers: int,
                 num_heads: int,
                 output_dims: int,
                 quick_gelu: bool = True,
                 fast_attn: bool = True,
                 with_cp: bool = False,
                 stem_channels: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f'image_size {image_size} is not a multiple of '
                             f'patch_size {patch_size}')
        self.image_size = image_size
        self.patch_size = patch_size
        self.grid_size = (image_size // patch_size, ) * 2
        self.stem = None
        in_channels, kernel = 3, patch_size
        if stem_channels:
            stride = 2**len(stem_channels)
            if patch_size % stride:
                raise ValueError(
                    f'a convolutional stem of {len(stem_channels)} stride-2 '
                    f'convolutions needs a patch_size divisible by {stride}, '
                    f'got {patch_size}')
            layers = []
            for c in stem_channels:
                layers += [
                    nn.Conv2d(in_channels, c, 3, 2, 1, bias=False),
                    nn.BatchNorm2d(c),
                    nn.ReLU(inplace=True)
                ]
                in_channels = c
            self.stem = nn.Sequential(*layers)
            kernel = patch_size // stride
        self.conv1 = nn.Conv2d(
            in_channels, embed_dims, kernel, stride=kernel, bias=False)
        scale = embed_dims**-0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(embed_dims))
        self.positional_embedding = nn.Parameter(
            scale *
            torch.randn(self.grid_size[0] * self.grid_size[1] + 1, embed_dims))
        self.ln_pre = LayerNorm(embed_dims)
        self.transformer = CLIPTransformer(embed_dims, num_layers, num_heads,
                                           quick_gelu, fast_attn, with_cp)
        self.ln_post = LayerNorm(embed_dims)
        self.proj = nn.Parameter(scale * torch.randn(embed_dims, output_dims))
        self.transformer.init_weights()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Encode normalised images.

        Args:
            x (Tensor): (B, 3, H, W), CLIP-normalised; H and W multiples of
                the patch size. Other grids than the pretraining one use a
                bicubically resized positional embedding.

        Returns:
            tuple[Tensor, Tensor]: global embedding (B, D) (``encode_image``)
            and patch features (B, D, H/p, W/p), both after ``ln_post`` and
            ``proj``.
        """
        if self.stem is not None:
            x = self.stem(x)  # (B, stem_channels[-1], H / 2**n, W / 2**n)
        x = self.conv1(x)  # (B, C, h, w)
        B, C, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(B, 1, -1)
        x = torch.cat([cls, x], dim=1)
        pos = resize_pos_embed(self.positional_embedding, self.grid_size,
                               (h, w))
        x = self.ln_pre(x + pos.to(x.dtype))
        x = self.transformer(x)
        x = self.ln_post(x) @ self.proj
        img_global = x[:, 0]
        img_feats = x[:, 1:].transpose(1, 2).reshape(B, -1, h, w)
        return img_global, img_feats


class CLIPTextTower(nn.Module):
    """OpenAI CLIP causal text transformer.

    Parameter names follow OpenAI's text keys (which OpenAI keeps at the top
    level; here they live under ``text.``).

    Args:
        context_length (int): Number of positions (77).
        vocab_size (int): Token vocabulary (49408).
        embed_dims (int): Token width.
        num_layers (int): Transformer blocks.
        num_heads (int): Attention heads.
        output_dims (int): Width of the joint embedding space.
        quick_gelu (bool): QuickGELU activation.
        fast_attn (bool): SDPA attention.
        with_cp (bool): Activation checkpointing of the blocks.
    """

    def __init__(self,
                 context_length: int,
                 vocab_size: int,
                 embed_dims: int,
                 num_layers: int,
                 num_heads: int,
                 output_dims: int,
                 quick_gelu: bool = True,
                 fast_attn: bool = True,
                 with_cp: bool = False) -> None:
        super().__init__()
        self.context_length = context_length
        self.vocab_size = vocab_size
        self.token_embedding = nn.Embedding(vocab_size, embed_dims)
        self.positional_embedding = nn.Parameter(
            torch.empty(context_length, embed_dims))
        self.transformer = CLIPTransformer(embed_dims, num_layers, num_heads,
                                           quick_gelu, fast_attn, with_cp)
        self.ln_final = LayerNorm(embed_dims)
        self.text_projection = nn.Parameter(
            torch.empty(embed_dims, output_dims))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=embed_dims**-0.5)
        self.transformer.init_weights()

    def forward(
        self, tokens: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode token ids.

        Args:
            tokens (Tensor): (B, L) ids, L <= context_length, each row
                ``[SOT, ..., EOT, 0...]`` (EOT is the largest id).

        Returns:
            tuple[Tensor, Tensor, Tensor]: global embedding at the EOT token
            (B, D) (``encode_text``), per-token features (B, L, D) after
            ``ln_final`` and ``text_projection``, and the mask (B, L) that is
            True from SOT to EOT inclusive.
        """
        B, L = tokens.shape
        x = self.token_embedding(tokens)
        x = x + self.positional_embedding[:L].to(x.dtype)
        x = self.transformer(x, causal=True)
        x = self.ln_final(x) @ self.text_projection
        eot = tokens.argmax(dim=-1)
        text_global = x[torch.arange(B, device=x.device), eot]
        mask = torch.arange(L, device=x.device)[None] <= eot[:, None]
        return text_global, x, mask


def to_2tuple(x: Union[int, Sequence[int]]) -> Tuple[int, int]:
    """``224 -> (224, 224)``; sequences are returned as a 2-tuple."""
    if isinstance(x, int):
        return (x, x)
    x = tuple(int(i) for i in x)
    if len(x) != 2:
        raise ValueError(f'expected an int or a pair, got {x}')
    return x


__all__ = [
    'QuickGELU', 'LayerNorm', 'CLIPAttention', 'CLIPResidualBlock',
    'CLIPTransformer', 'CLIPVisionTower', 'CLIPTextTower', 'resize_pos_embed',
    'to_2tuple'
]
