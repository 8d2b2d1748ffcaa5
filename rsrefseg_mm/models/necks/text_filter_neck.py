"""Text-filtered prompter between the text-image towers and SAM (RSRefSeg,
arXiv 2501.06809)."""
import math
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.dist import all_reduce
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from segment_anything.modeling.prompt_encoder import PositionEmbeddingRandom
from torch import Tensor

from .filter_cfg import check_filter_cfg


@MODELS.register_module()
class TextFilterNeck(BaseModule):
    """Turn the towers' image and text features into SAM prompts.

    From `RSRefSeg <https://arxiv.org/abs/2501.06809>`_. ``TextFilterNeck()``
    is the authors' prompter for SigLIP so400m and SAM; the CLIP variant sets
    its own keys (``configs/_base_/models/rsrefseg.py``). With patch features
    ``V`` (B, D, h, w), token features ``T`` (B, L, D), the sentence feature
    ``t_g`` (B, D), the scale ``s`` and the bias ``b`` (``filter_cfg``):

    * local filter ``A_loc = sigmoid(s * cos(V, T_l) + b)`` (B, L, h, w),
      averaged over the *real* tokens only (``text_mask``). The authors
      average over all L positions, padding included, so their mean depends
      on the padded length; here padding never enters it. With
      ``exclude_sot=True`` (CLIP: its causal text tower gives the start
      token the same feature for every sentence) the first real token is
      left out too. Masked positions of ``local_maps`` are 0.
    * global filter ``A_g = sigmoid(s * cos(V, t_g) + b)`` (B, h, w).
    * ``F = concat[(V + mean_l(A_loc * V)) / 2, A_g * V, V]`` (B, 3D, h, w)
      -> 1x1 conv to ``prompt_dims`` C (``fuse``: conv + norm + act, or a
      plain conv with bias when ``fuse_norm_act=False``) -> + positional
      encoding on the (h, w) grid (cell centres ``(i + 0.5) / h``) ->
      ``down_spatial_times`` x (3x3 stride-2 conv + norm + act) -> a linear
      1x1 conv with bias (``final_proj``; the tokens are not clipped by the
      last activation) -> sparse prompts (B, N, C), N = h' * w'.
    * dense prompt: the global logit map ``s * cos(V, t_g) + b`` (before the
      sigmoid) resized (bilinear) to ``dense_prompt_size`` (B, 1, Hm, Wm).

    The positional encoding is SAM's pretrained shared image encoding
    (``pos_embed='sam'``: the prompt encoder's ``pe_layer``, which
    :class:`~rsrefseg_mm.models.segmentors.RSRefSeg` hands over with
    :meth:`set_pos_embed_layer`; stored once, in the head) or a fresh random
    one owned by the neck (``pos_embed='random'``).

    ``filter_cfg`` says where ``s`` and ``b`` come from (``s`` always starts
    from the backbone's ``logit_scale``; a backbone with a ``logit_bias``,
    SigLIP, adds it to ``b``):

    * ``dict(type='backbone')`` (the authors'): the backbone's scale and bias
      as they are, nothing learnt in the neck (the authors also freeze them
      in the backbone: ``logit_trainable=False``); ``init_bias`` (default
      0) is a fixed offset;
    * ``dict(type='learned', init_bias=-10.0, gain=False)``: a learnable
      bias, and with ``gain=True`` a learnable factor ``exp(g)`` on ``s``;
    * ``dict(type='calibrated', std=2.0, init_bias=-10.0)``: learnable gain
      and bias set on the first training forward so that the logits start
      with mean 0 and std ``std`` (statistics over all ranks; done once, the
      ``filters_calibrated`` buffer is saved). A sigmoid filter only passes
      gradient within a few units of 0: with CLIP's fixed ``s`` ~ 100 a
      bias of -10 leaves most positions saturated.

    Ablation switches: with ``use_local_filter=False`` the first branch is
    ``V`` and with ``use_global_filter=False`` the second branch is ``V``;
    the channel layout (3D) stays, so only the filtering is removed. The maps
    are still computed and returned for visualisation, and the dense prompt
    (``use_dense_prompt``) is the global logit map either way.

    Args:
        in_channels (int): Joint embedding dim D of the towers (1152 for
            SigLIP so400m, 512 for CLIP ViT-B/16, 768 for ViT-L/14).
        prompt_dims (int): SAM prompt dim C (256 for official SAM).
        dense_prompt_size (tuple[int, int]): SAM mask-input size (Hm, Wm),
            (256, 256) for a 1024 input.
        down_spatial_times (int): Number of stride-2 convs k (>= 0).
        use_local_filter (bool): Local (per-token) filter branch.
        use_global_filter (bool): Global (sentence) filter branch.
        use_dense_prompt (bool): Output the dense prompt (else None).
        exclude_sot (bool): Leave the first real token (CLIP's SOT) out of
            the local mean. Defaults to False: SigLIP's text has no start
            token, its first position is a word.
        filter_cfg (dict): Scale and bias of the filters (see above).
            Defaults to ``dict(type='backbone')``.
        fuse_norm_act (bool): ``fuse`` is conv (no bias) + norm + act (the
            authors') instead of a plain 1x1 conv with bias. Defaults to
            True.
        final_proj (bool): The linear 1x1 conv after the down-sampling convs
            (the authors'). Defaults to True.
        pos_embed (str): ``'sam'`` (default) or ``'random'`` (see above).
        norm_cfg (dict): Norm of the prompter convs. BN by default; use
            ``dict(type='SyncBN')`` only in distributed configs.
        act_cfg (dict): Activation of the prompter convs.
        init_cfg (dict, optional): Initialisation config.
    """

    def __init__(self,
                 in_channels: int = 1152,
                 prompt_dims: int = 256,
                 dense_prompt_size: Union[int, Sequence[int]] = (256, 256),
                 down_spatial_times: int = 2,
                 use_local_filter: bool = True,
                 use_global_filter: bool = True,
                 use_dense_prompt: bool = True,
                 exclude_sot: bool = False,
                 filter_cfg: dict = dict(type='backbone'),
                 fuse_norm_act: bool = True,
                 final_proj: bool = True,
                 pos_embed: str = 'sam',
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
        if pos_embed not in ('random', 'sam'):
            raise ValueError("pos_embed must be 'random' or 'sam', got "
                             f'{pos_embed!r}')
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

        self.filter_cfg = check_filter_cfg(filter_cfg)
        kind = self.filter_cfg['type']
        self.logit_bias = nn.Parameter(
            torch.tensor(float(self.filter_cfg['init_bias'])),
            requires_grad=kind != 'backbone')
        self.log_scale_gain = nn.Parameter(torch.zeros(())) if kind == \
            'calibrated' or self.filter_cfg.get('gain') else None
        self.filter_calibration = None
        if kind == 'calibrated':
            self.filter_calibration = {'std': self.filter_cfg['std']}
            self.register_buffer('filters_calibrated', torch.tensor(False))

        if fuse_norm_act:
            self.fuse = ConvModule(
                3 * in_channels,
                prompt_dims,
                kernel_size=1,
                norm_cfg=norm_cfg,
                act_cfg=act_cfg)
        else:
            self.fuse = nn.Conv2d(3 * in_channels, prompt_dims, kernel_size=1)
        self.pos_embed = pos_embed
        # 'sam': set by set_pos_embed_layer; kept in a tuple so that the
        # head's module is not registered (and saved) twice
        self._shared_pe: Tuple[nn.Module, ...] = ()
        if pos_embed == 'random':
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
        self.final_proj = nn.Conv2d(
            prompt_dims, prompt_dims, kernel_size=1) if final_proj else None

    def set_pos_embed_layer(self, layer: nn.Module) -> None:
        """Use ``layer`` (SAM's ``PositionEmbeddingRandom``) as positional
        encoding (``pos_embed='sam'`` only).

        Args:
            layer (nn.Module): Called with ``(h, w)``, returns (C, h, w).
        """
        if self.pos_embed != 'sam':
            raise ValueError("set_pos_embed_layer needs pos_embed='sam', "
                             f'the neck has {self.pos_embed!r}')
        self._shared_pe = (layer, )

    def positional_encoding(self, h: int, w: int) -> Tensor:
        """(C, h, w) encoding of the prompter grid."""
        if self.pos_embed == 'random':
            return self.pe_layer((h, w))
        if not self._shared_pe:
            raise RuntimeError(
                "TextFilterNeck(pos_embed='sam') has no SAM positional "
                'encoding; RSRefSeg sets it from the decode head '
                '(neck.set_pos_embed_layer(head.prompt_encoder.pe_layer))')
        return self._shared_pe[0]((h, w))

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

    @torch.no_grad()
    def filter_scale_bias(
            self, logit_outputs: Dict[str, Tensor]) -> Tuple[float, float]:
        """``s`` and ``b`` of the filters, ``sigmoid(s * cos + b)``, as
        floats, from the backbone's ``logit_outputs()``."""
        scale, bias = self._scale_bias(logit_outputs, self.logit_bias)
        return float(scale), float(bias)

    @torch.no_grad()
    def calibrate_filters(self, feats: Dict[str, Tensor], local_cos: Tensor,
                          global_cos: Tensor, weights: Tensor) -> None:
        """Set ``g`` and ``b`` so the filter logits have mean 0 and the
        configured std on this batch (statistics summed over all ranks).

        Args:
            feats (dict): Backbone outputs (``logit_scale``,
                optional ``logit_bias``).
            local_cos (Tensor): (B, L, h, w) patch-token cosines.
            global_cos (Tensor): (B, 1, h, w) patch-sentence cosines.
            weights (Tensor): (B, L) tokens that enter the local mean.
        """
        vals = torch.cat(
            [local_cos[weights.bool()].flatten(),
             global_cos.flatten()]).double()
        stats = torch.stack([
            vals.new_tensor(float(vals.numel())),
            vals.sum(),
            vals.square().sum()
        ])
        all_reduce(stats)  # sum over ranks; no-op when not distributed
        n, s1, s2 = stats.tolist()
        mean = s1 / n
        std = math.sqrt(max(s2 / n - mean * mean, 1e-12))
        scale = float(torch.as_tensor(feats['logit_scale']))
        target = float(self.filter_calibration['std'])
        self.log_scale_gain.fill_(math.log(target / (scale * std)))
        backbone_bias = float(torch.as_tensor(feats.get('logit_bias', 0.)))
        self.logit_bias.fill_(-target * mean / std - backbone_bias)
        self.filters_calibrated.fill_(True)
        print_log(
            f'TextFilterNeck: filter cosines mean {mean:.4f} std {std:.4f} '
            f'over {int(n)} values; scale {scale:.2f} x gain '
            f'{target / (scale * std):.4g}, bias '
            f'{-target * mean / std:.3f} -> logits mean 0, std {target}',
            logger='current')

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
            feats (dict): Backbone outputs (``SigLIPBackbone``,
                ``CLIPBackbone``): ``img_feats`` (B, D, h, w),
                ``text_feats`` (B, L, D), ``text_global`` (B, D),
                ``text_mask`` (B, L) bool (all tokens real if absent),
                ``logit_scale`` (0-dim), optional ``logit_bias``.

        Returns:
            dict: ``sparse_prompts`` (B, N, C), ``dense_prompts``
            (B, 1, Hm, Wm) or None, ``local_maps`` (B, L, h, w) (0 on
            masked tokens), ``global_map`` (B, h, w) (sigmoid),
            ``global_logits`` (B, h, w) (before the sigmoid).
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
            text_mask = torch.ones(
                T.shape[:2], dtype=torch.bool, device=T.device)
        v_n = F.normalize(V, dim=1)
        local_cos = torch.einsum('bdhw,bld->blhw', v_n,
                                 F.normalize(T, dim=-1))  # (B, L, h, w)
        global_cos = torch.einsum('bdhw,bd->bhw', v_n,
                                  F.normalize(t_g, dim=-1))[:, None]
        weights = self.token_weights(text_mask).to(V.dtype)  # (B, L)
        if self.filter_calibration is not None and self.training and \
                not bool(self.filters_calibrated):
            self.calibrate_filters(feats, local_cos, global_cos, weights)
        scale, bias = self._scale_bias(feats, V)

        # local filter: (B, L, h, w)
        local_logits = scale * local_cos + bias
        local_maps = local_logits.sigmoid() * weights[:, :, None, None]
        local_mean = local_maps.sum(
            1, keepdim=True) / weights.sum(1).clamp(
                min=1)[:, None, None, None]  # (B, 1, h, w)
        # global filter: (B, 1, h, w)
        global_logits = scale * global_cos + bias
        global_map = global_logits.sigmoid()

        branch_local = 0.5 * (V + local_mean * V) \
            if self.use_local_filter else V
        branch_global = global_map * V if self.use_global_filter else V
        x = self.fuse(torch.cat([branch_local, branch_global, V], dim=1))
        x = x + self.positional_encoding(h, w).to(x.dtype)[None]
        x = self.downsample(x)
        if self.final_proj is not None:
            x = self.final_proj(x)
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
            global_map=global_map[:, 0],
            global_logits=global_logits[:, 0])
