"""Building blocks of SigLIP's image and text towers.

SigLIP (`Sigmoid Loss for Language Image Pre-Training
<https://arxiv.org/abs/2303.15343>`_) pairs a ViT image tower (no class
token, post-LayerNorm, multi-head attention pooling "MAP" head) with a
non-causal text transformer whose sentence feature is a linear head on the
last position.

Why written here rather than imported:

* transformers' ``SiglipModel`` is the reference (the authors of RSRefSeg use
  it), but transformers >= 4.52 makes ``import mmpretrain`` crash and it is a
  large runtime dependency for two towers; here it is a test-only reference.
* timm's SigLIP towers (``vit_so400m_patch14_siglip_384``) fuse q, k and v
  into one ``attn.qkv`` linear, so a rank-r LoRA on it is not the authors'
  three rank-r LoRAs on ``q_proj``/``k_proj``/``v_proj``; timm has no text
  tower either.

So the towers below keep transformers' module and parameter names exactly
(``vision_model.encoder.layers.N.self_attn.q_proj``, ...), which lets
``model.safetensors`` of the Hugging Face folder load without conversion and
makes every projection a separately LoRA-able ``nn.Linear``. Attention runs
through ``torch.nn.functional.scaled_dot_product_attention``.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp


class SiglipAttention(nn.Module):
    """Multi-head self-attention with separate ``q/k/v/out`` projections.

    Args:
        embed_dims (int): Token width C.
        num_heads (int): Heads; must divide ``embed_dims``.
    """

    def __init__(self, embed_dims: int, num_heads: int) -> None:
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims {embed_dims} is not divisible by '
                             f'num_heads {num_heads}')
        self.num_heads = num_heads
        self.head_dims = embed_dims // num_heads
        self.q_proj = nn.Linear(embed_dims, embed_dims)
        self.k_proj = nn.Linear(embed_dims, embed_dims)
        self.v_proj = nn.Linear(embed_dims, embed_dims)
        self.out_proj = nn.Linear(embed_dims, embed_dims)

    def forward(self,
                x: torch.Tensor,
                attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Self-attention.

        Args:
            x (Tensor): Tokens (B, N, C).
            attn_mask (Tensor, optional): Bool (B, 1, 1, N), True = attend.

        Returns:
            Tensor: (B, N, C).
        """
        B, N, C = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, N, self.num_heads, self.head_dims).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            heads(self.q_proj(x)),
            heads(self.k_proj(x)),
            heads(self.v_proj(x)),
            attn_mask=attn_mask)
        return self.out_proj(out.transpose(1, 2).reshape(B, N, C))


class SiglipMLP(nn.Module):
    """``fc2(gelu_tanh(fc1(x)))``.

    Args:
        embed_dims (int): Token width.
        hidden_dims (int): MLP width (4304 for so400m).
    """

    def __init__(self, embed_dims: int, hidden_dims: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(embed_dims, hidden_dims)
        self.fc2 = nn.Linear(hidden_dims, embed_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate='tanh'))


class SiglipEncoderLayer(nn.Module):
    """Pre-norm block ``x + attn(ln1(x))``, ``x + mlp(ln2(x))``."""

    def __init__(self, embed_dims: int, num_heads: int, hidden_dims: int,
                 eps: float) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(embed_dims, eps=eps)
        self.self_attn = SiglipAttention(embed_dims, num_heads)
        self.layer_norm2 = nn.LayerNorm(embed_dims, eps=eps)
        self.mlp = SiglipMLP(embed_dims, hidden_dims)

    def forward(self,
                x: torch.Tensor,
                attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), attn_mask)
        return x + self.mlp(self.layer_norm2(x))


class SiglipEncoder(nn.Module):
    """A stack of :class:`SiglipEncoderLayer` named ``layers``.

    Args:
        embed_dims, num_layers, num_heads, hidden_dims, eps: Layer sizes.
        with_cp (bool): Activation checkpointing of each layer while
            training with autograd enabled.
    """

    def __init__(self,
                 embed_dims: int,
                 num_layers: int,
                 num_heads: int,
                 hidden_dims: int,
                 eps: float = 1e-6,
                 with_cp: bool = False) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.layers = nn.ModuleList([
            SiglipEncoderLayer(embed_dims, num_heads, hidden_dims, eps)
            for _ in range(num_layers)
        ])

    def forward(self,
                x: torch.Tensor,
                attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, N, C) -> (B, N, C)."""
        use_cp = self.with_cp and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            if use_cp:
                x = cp.checkpoint(layer, x, attn_mask, use_reentrant=False)
            else:
                x = layer(x, attn_mask)
        return x


class SiglipPatchEmbeddings(nn.Module):
    """Patch convolution plus learnt positions (no class token).

    The grid is ``image_size // patch_size`` (a valid convolution: 384 px
    with 14 px patches gives 27x27).

    Args:
        image_size (int): Pretraining resolution (defines the stored grid).
        patch_size (int): Patch size p.
        embed_dims (int): Token width.
    """

    def __init__(self, image_size: int, patch_size: int,
                 embed_dims: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.grid = image_size // patch_size
        self.patch_embedding = nn.Conv2d(
            3, embed_dims, patch_size, stride=patch_size)
        self.position_embedding = nn.Embedding(self.grid**2, embed_dims)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, int, int]:
        """(B, 3, H, W) -> tokens (B, h*w, C), h, w.

        A grid other than the stored one bicubically resizes the positions
        (as transformers' ``interpolate_pos_encoding``).
        """
        x = self.patch_embedding(x.to(self.patch_embedding.weight.dtype))
        B, C, h, w = x.shape
        pos = self.position_embedding.weight
        if (h, w) != (self.grid, self.grid):
            pos = pos.reshape(1, self.grid, self.grid, C).permute(0, 3, 1, 2)
            pos = F.interpolate(
                pos, size=(h, w), mode='bicubic', align_corners=False)
            pos = pos.permute(0, 2, 3, 1).reshape(h * w, C)
        return x.flatten(2).transpose(1, 2) + pos, h, w


class SiglipAttentionPoolingHead(nn.Module):
    """SigLIP's multi-head attention pooling ("MAP") head.

    A learnt ``probe`` query attends over the tokens, then a residual MLP.
    The attention keeps ``nn.MultiheadAttention``'s parameter names
    (``attention.in_proj_weight``, ``attention.in_proj_bias``,
    ``attention.out_proj``) so checkpoints load, but is computed explicitly:
    ``nn.MultiheadAttention`` reads ``out_proj.weight`` inside its functional
    call, which a LoRA wrapper would break.

    Args:
        embed_dims (int): Token width C.
        num_heads (int): Heads.
        hidden_dims (int): MLP width.
        eps (float): LayerNorm epsilon.
    """

    def __init__(self, embed_dims: int, num_heads: int, hidden_dims: int,
                 eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.probe = nn.Parameter(torch.randn(1, 1, embed_dims))
        self.attention = nn.Module()
        self.attention.in_proj_weight = nn.Parameter(
            torch.empty(3 * embed_dims, embed_dims))
        self.attention.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dims))
        self.attention.out_proj = nn.Linear(embed_dims, embed_dims)
        nn.init.xavier_uniform_(self.attention.in_proj_weight)
        self.layernorm = nn.LayerNorm(embed_dims, eps=eps)
        self.mlp = SiglipMLP(embed_dims, hidden_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens (B, N, C) -> pooled (B, C)."""
        B, N, C = x.shape
        d = C // self.num_heads
        w_q, w_kv = self.attention.in_proj_weight.split([C, 2 * C])
        b_q, b_kv = self.attention.in_proj_bias.split([C, 2 * C])
        q = F.linear(self.probe.expand(B, -1, -1), w_q, b_q)
        k, v = F.linear(x, w_kv, b_kv).chunk(2, dim=-1)
        q = q.view(B, 1, self.num_heads, d).transpose(1, 2)
        k = k.view(B, N, self.num_heads, d).transpose(1, 2)
        v = v.view(B, N, self.num_heads, d).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        out = self.attention.out_proj(out.transpose(1, 2).reshape(B, 1, C))
        out = out + self.mlp(self.layernorm(out))
        return out[:, 0]


class SiglipVisionTower(nn.Module):
    """SigLIP image tower (transformers' ``SiglipVisionTransformer`` layout).

    Args:
        image_size (int): Pretraining resolution (384 for so400m-p14-384).
        patch_size (int): Patch size (14).
        embed_dims (int): Width (1152).
        num_layers (int): Blocks (27).
        num_heads (int): Heads (16).
        hidden_dims (int): MLP width (4304).
        eps (float): LayerNorm epsilon (1e-6).
        with_cp (bool): Activation checkpointing of the blocks.
    """

    def __init__(self,
                 image_size: int,
                 patch_size: int,
                 embed_dims: int,
                 num_layers: int,
                 num_heads: int,
                 hidden_dims: int,
                 eps: float = 1e-6,
                 with_cp: bool = False) -> None:
        super().__init__()
        self.embeddings = SiglipPatchEmbeddings(image_size, patch_size,
                                                embed_dims)
        self.encoder = SiglipEncoder(embed_dims, num_layers, num_heads,
                                     hidden_dims, eps, with_cp)
        self.post_layernorm = nn.LayerNorm(embed_dims, eps=eps)
        self.head = SiglipAttentionPoolingHead(embed_dims, num_heads,
                                               hidden_dims, eps)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Encode normalised images.

        Args:
            x (Tensor): (B, 3, H, W), values in [-1, 1].

        Returns:
            tuple[Tensor, Tensor]: pooled embedding (B, C) (the MAP head,
            transformers' ``pooler_output``) and patch features
            (B, C, H // p, W // p) after ``post_layernorm``
            (``last_hidden_state``).
        """
        tokens, h, w = self.embeddings(x)
        tokens = self.post_layernorm(self.encoder(tokens))
        pooled = self.head(tokens)
        B, _, C = tokens.shape
        return pooled, tokens.transpose(1, 2).reshape(B, C, h, w)


class SiglipTextTower(nn.Module):
    """SigLIP text tower (transformers' ``SiglipTextTransformer`` layout).

    Non-causal. SigLIP was trained on text padded to ``context_length``
    (64) with the pad id and no attention mask, and its sentence feature is
    ``head`` applied to the *last* position; :class:`SigLIPBackbone` feeds it
    exactly that.

    Args:
        context_length (int): Positions (64).
        vocab_size (int): Vocabulary (32000; 250000 for i18n models).
        embed_dims (int): Width (1152 for so400m).
        num_layers (int): Blocks (27).
        num_heads (int): Heads (16).
        hidden_dims (int): MLP width (4304).
        output_dims (int): Width of ``head`` (the joint space; = embed_dims
            for the public models).
        eps (float): LayerNorm epsilon.
        with_cp (bool): Activation checkpointing of the blocks.
    """

    def __init__(self,
                 context_length: int,
                 vocab_size: int,
                 embed_dims: int,
                 num_layers: int,
                 num_heads: int,
                 hidden_dims: int,
                 output_dims: int,
                 eps: float = 1e-6,
                 with_cp: bool = False) -> None:
        super().__init__()
        self.context_length = context_length
        self.embeddings = nn.Module()
        self.embeddings.token_embedding = nn.Embedding(vocab_size, embed_dims)
        self.embeddings.position_embedding = nn.Embedding(
            context_length, embed_dims)
        self.encoder = SiglipEncoder(embed_dims, num_layers, num_heads,
                                     hidden_dims, eps, with_cp)
        self.final_layer_norm = nn.LayerNorm(embed_dims, eps=eps)
        self.head = nn.Linear(embed_dims, output_dims)
        nn.init.normal_(
            self.embeddings.position_embedding.weight,
            std=1 / math.sqrt(embed_dims))

    def forward(
        self,
        tokens: torch.Tensor,
        attn_mask: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Encode token ids.

        Args:
            tokens (Tensor): (B, L) ids, L <= context_length.
            attn_mask (Tensor, optional): (B, L) bool, True = attend. None
                (SigLIP's training setting) attends to every position.

        Returns:
            tuple[Tensor, Tensor]: sentence feature (B, D) = ``head`` of the
            last position (transformers' ``pooler_output``) and per-token
            features (B, L, C) after ``final_layer_norm`` (no head).
        """
        L = tokens.shape[1]
        if L > self.context_length:
            raise ValueError(f'{L} tokens exceed the context length '
                             f'{self.context_length}')
        x = self.embeddings.token_embedding(tokens)
        x = x + self.embeddings.position_embedding.weight[:L].to(x.dtype)
        mask = None if attn_mask is None else attn_mask[:, None, None, :]
        x = self.final_layer_norm(self.encoder(x, mask))
        return self.head(x[:, -1]), x


__all__ = [
    'SiglipAttention', 'SiglipMLP', 'SiglipEncoderLayer', 'SiglipEncoder',
    'SiglipPatchEmbeddings', 'SiglipAttentionPoolingHead', 'SiglipVisionTower',
    'SiglipTextTower'
]
