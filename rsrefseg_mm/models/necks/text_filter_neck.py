"""Text-filtered prompter between CLIP and SAM (RSRefSeg, arXiv 2501.06809).
"""
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from segment_anything.modeling.prompt_encoder import PositionEmbeddingRandom
from torch import Tensor


@MODELS.register_module()
class TextFilterNeck(BaseModule):
    """Turn CLIP image/text features into SAM prompts via text filters.

    From `RSRefSeg <https://arxiv.org/abs/2501.06809>`_. With patch features
    ``V`` (B, D, h, w), token features ``T`` (B, L, D), the sentence feature
    ``t_g`` (B, D), the logit scale ``s`` and a learnable bias ``b``:

    * local filter ``A_loc = sigmoid(s * cos(V, T_l) + b)`` (B, L, h, w),
      averaged over the *real* tokens only (``text_mask``): padding never
      enters the mean. SOT/EOT: the backbone's ``text_mask`` marks SOT..EOT
      inclusive. CLIP's text tower is causal, so the SOT feature only sees
      itself and is identical for every sentence; with ``exclude_sot=True``
      (default) it is left out of the mean. EOT (the sentence summary, also
      ``t_g``) stays in. Masked positions of ``local_maps`` are 0.
    * global filter ``A_g = sigmoid(s * cos(V, t_g) + b)`` (B, h, w).
    * ``F = concat[(V + mean_l(A_loc * V)) / 2, A_g * V, V]`` (B, 3D, h, w)
      -> 1x1 conv to ``prompt_dims`` C -> + SAM random-Fourier positional
      encoding (``PositionEmbeddingRandom``, owned here) ->
      ``down_spatial_times`` x (3x3 stride-2 conv + norm + act) ->
      sparse prompts (B, N, C), N = h' * w'.
    * dense prompt: the global logit map ``s * cos(V, t_g) + b`` (before the
      sigmoid) resized (bilinear) to ``dense_prompt_size`` (B, 1, Hm, Wm).

    Ablation switches: with ``use_local_filter=False`` the first branch is
    ``V`` (no text-weighted term) and with ``use_global_filter=False`` the
    second branch is ``V``; the channel layout (3D) stays, so only the
    filtering is removed. The maps are still computed and returned for
    visualisation, and the dense prompt (``use_dense_prompt``) is the global
    logit map whether or not the global branch filters ``F``.

    Args:
        in_channels (int): CLIP joint embedding dim D (512 for ViT-B/16,
            768 for ViT-L/14).
        prompt_dims (int): SAM prompt dim C (256 for official SAM).
        dense_prompt_size (tuple[int, int]): SAM mask-input size (Hm, Wm),
            (256, 256) for a 1024 input.
        down_spatial_times (int): Number of stride-2 convs k (>= 0).
        use_local_filter (bool): Local (per-token) filter branch.
        use_global_filter (bool): Global (sentence) filter branch.
        use_dense_prompt (bool): Output the dense prompt (else None).
        exclude_sot (bool): Leave the SOT token out of the local mean.
        learnable_scale (bool): Multiply ``s`` by a learnable ``exp(g)``
            (g initialised at 0). ``s`` itself comes from the backbone.
        init_bias (float): Initial ``b``. -10 follows SigLIP's sigmoid-loss
            initialisation (with ``s`` ~ 100 and cosine ~ 0.1-0.3 this
            starts the filters out of saturation). A backbone that returns
            its own ``logit_bias`` (SigLIP) adds it to ``b``.
        norm_cfg (dict): Norm of the down-sampling convs. BN by default;
            use ``dict(type='SyncBN')`` only in distributed configs.
        act_cfg (dict): Activation of the down-sampling convs.
        init_cfg (dict, optional): Initialisation config.
    """

    def __init__(self,
                 in_channels: int = 512,
                 prompt_dims: int = 256,
                 dense_prompt_size: Union[int, Sequence[int]] = (256, 256),
                 down_spatial_times: int = 2,
                 use_local_filter: bool = True,
                 use_global_filter: bool = True,
                 use_dense_prompt: bool = True,
                 exclude_sot: bool = True,
                 learnable_scale: bool = False,
                 init_bias: float = -10.0,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 act_cfg: dict = dict(type='GELU'),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        if down_spatial_times < 0:
            raise ValueError('down_spatial_times must be >= 0, got '
                             f'{down_spatial_times}')
        if prompt_dims % 2:
            raise ValueError(f'prompt_dims must be even (SAM positional '
                             f'encoding), got {prompt_dims}')
        if isinstance(dense_prompt_size, int):
            dense_prompt_size = (dense_prompt_size, dense_prompt_size)
        self.in_channels = in_channels
        self.prompt_dims = prompt_dims
        self.dense_prompt_size = tuple(dense_prompt_size)
        self.down_spatial_times = down_spatial_times
        self.use_local_filter = use_local_filter
        self.use_global_filter = use_global_filter
        self.use_dense_prompt = use_dense_prompt
        self.exclude_sot = exclude_sot

        self.logit_bias = nn.Parameter(torch.tensor(float(init_bias)))
        self.log_scale_gain = nn.Parameter(
            torch.zeros(())) if learnable_scale else None

        self.fuse = nn.Conv2d(3 * in_channels, prompt_dims, kernel_size=1)
        self.pe_layer = PositionEmbeddingRandom(prompt_dims // 2)
        self.downsample = nn.Sequential(*[
            ConvModule(
                prompt_dims,
                prompt_dims,
                kernel_size=3,
                stride=2,
                padding=1,
                norm_cfg=norm_cfg,
                act_cfg=act_cfg) for _ in range(down_spatial_times)
        ])

    def _scale_bias(self, feats: Dict[str, Tensor],
                    ref: Tensor) -> Tuple[Tensor, Tensor]:
        scale = feats.get('logit_scale')
        if scale is None:
            raise KeyError('TextFilterNeck needs `logit_scale` in the '
                           'backbone outputs')
        scale = torch.as_tensor(scale, device=ref.device).to(ref.dtype)
        if self.log_scale_gain is not None:
            scale = scale * self.log_scale_gain.exp().to(ref.dtype)
        bias = self.logit_bias.to(ref.dtype)
        if feats.get('logit_bias') is not None:
            bias = bias + torch.as_tensor(
                feats['logit_bias'], device=ref.device).to(ref.dtype)
        return scale, bias

    def token_weights(self, text_mask: Tensor) -> Tensor:
        """Weights of the tokens in the local mean.

        Args:
            text_mask (Tensor): (B, L) bool, True on SOT..EOT.

        Returns:
            Tensor: (B, L) bool, real tokens (SOT dropped if
            ``exclude_sot`` and the sentence keeps another token).
        """
        mask = text_mask.bool().clone()
        if self.exclude_sot:
            first = mask.float().argmax(dim=1)  # first real token = SOT
            keep_sot = mask.sum(dim=1) <= 1
            rows = torch.arange(mask.shape[0], device=mask.device)
            mask[rows, first] = mask[rows, first] & keep_sot
        return mask

    def forward(self, feats: Dict[str, Tensor]) -> Dict[str, Optional[Tensor]]:
        """Compute SAM prompts.

        Args:
            feats (dict): CLIPBackbone outputs: ``img_feats`` (B, D, h, w),
                ``text_feats`` (B, L, D), ``text_global`` (B, D),
                ``text_mask`` (B, L) bool (all tokens real if absent),
                ``logit_scale`` (0-dim), optional ``logit_bias``.

        Returns:
            dict: ``sparse_prompts`` (B, N, C), ``dense_prompts``
            (B, 1, Hm, Wm) or None, ``local_maps`` (B, L, h, w) (0 on
            masked tokens), ``global_map`` (B, h, w) (sigmoid).
        """
        for key in ('img_feats', 'text_feats', 'text_global'):
            if key not in feats:
                raise KeyError(f'TextFilterNeck needs `{key}` in the backbone '
                               f'outputs, got keys {sorted(feats)}')
        V = feats['img_feats']
        T = feats['text_feats'].to(V.dtype)
        t_g = feats['text_global'].to(V.dtype)
        B, D, h, w = V.shape
        if D != self.in_channels or T.shape[-1] != D or t_g.shape != (B, D):
            raise ValueError(
                f'TextFilterNeck(in_channels={self.in_channels}) got '
                f'img_feats {tuple(V.shape)}, text_feats {tuple(T.shape)}, '
                f'text_global {tuple(t_g.shape)}')
        text_mask = feats.get('text_mask')
        if text_mask is None:
            text_mask = torch.ones(T.shape[:2], dtype=torch.bool,
                                   device=T.device)
        scale, bias = self._scale_bias(feats, V)

        v_n = F.normalize(V, dim=1)
        # local filter: (B, L, h, w)
        local_logits = scale * torch.einsum('bdhw,bld->blhw', v_n,
                                            F.normalize(T, dim=-1)) + bias
        weights = self.token_weights(text_mask).to(V.dtype)  # (B, L)
        local_maps = local_logits.sigmoid() * weights[:, :, None, None]
        local_mean = local_maps.sum(1, keepdim=True) / weights.sum(
            1).clamp(min=1)[:, None, None, None]  # (B, 1, h, w)
        # global filter: (B, 1, h, w)
        global_logits = scale * torch.einsum(
            'bdhw,bd->bhw', v_n, F.normalize(t_g, dim=-1))[:, None] + bias
        global_map = global_logits.sigmoid()

        branch_local = 0.5 * (V + local_mean * V) \
            if self.use_local_filter else V
        branch_global = global_map * V if self.use_global_filter else V
        x = self.fuse(torch.cat([branch_local, branch_global, V], dim=1))
        x = x + self.pe_layer((h, w)).to(x.dtype)[None]
        x = self.downsample(x)
        sparse = x.flatten(2).transpose(1, 2)  # (B, N, C)

        dense = None
        if self.use_dense_prompt:
            dense = F.interpolate(
                global_logits,
                size=self.dense_prompt_size,
                mode='bilinear',
                align_corners=False)
        return dict(
            sparse_prompts=sparse,
            dense_prompts=dense,
            local_maps=local_maps,
            global_map=global_map[:, 0])
