"""Cascaded prompter of RSRefSeg 2: decoupled text queries, image refinement
and SAM prompts (KyanChen/RSRefSeg2, ``refseg/models/models.py``)."""
import math
import re
from typing import Dict, Iterable, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmengine.dist import all_gather, get_dist_info
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from mmseg.utils import SampleList
from segment_anything.modeling.prompt_encoder import PositionEmbeddingRandom
from torch import Tensor

from .cascade_block import CascadeBlock, CascadeMLP

#: Operation orders and dense-prompt settings of the authors' RRSIS-D,
#: RISBench and RefSegRS configs (``configs_RSRefSeg2/*_training.py``).
QUERY_TEXT_ORDER = (
    'self_attn_query_query1', 'norm_query1_1',
    'self_attn_query_query2', 'norm_query2_1',
    'cross_attn_query_text_query1_text', 'norm_query1_2', 'mlp_query1_2',
    'norm_query1_3',
    'cross_attn_query_text_query2_text', 'norm_query2_2', 'mlp_query2_2',
    'norm_query2_3',
    'cross_attn_query_query_query1_query2', 'norm_query1_4', 'mlp_query1_3',
    'norm_query1_5',
    'cross_attn_query_query_query2_query1', 'norm_query2_4', 'mlp_query2_3',
    'norm_query2_5')  # yapf: disable
QUERY1_IMG_ORDER = (
    'self_attn_text_text_1', 'norm_text_1',
    'cross_attn_img_text_1', 'norm_img_1', 'mlp_img_1',
    'norm_img_2')  # yapf: disable
PROMPT_ORDER = (
    'self_attn_text_1', 'norm_text_1',
    'cross_attn_img_text_1', 'norm_img_1', 'mlp_img_1', 'norm_img_2',
    'self_attn_prompt_1', 'norm_prompt_1',
    'cross_attn_prompt_text_1', 'norm_prompt_2', 'mlp_prompt_2',
    'norm_prompt_3',
    'cross_attn_prompt_img_1', 'norm_prompt_4', 'mlp_prompt_3',
    'norm_prompt_5')  # yapf: disable
DENSE_PROMPT_CONFIG = dict(
    proj_from='text_pool',
    has_internal_proj=False,
    featmap_from='refined_clipfeat',
    has_internal_conv=True,
    up_strategy='preup')

_DENSE_FROM = ('prompt', 'text_pool', 'text_queries2_pool',
               'refined_text_queries2_pool')


def text_pool_queries(text_feats: Tensor, text_mask: Optional[Tensor],
                      num: int) -> Tensor:
    """Adaptive average pooling of the tokens into ``num`` queries.

    Query i averages the tokens ``floor(i n / num)`` to
    ``ceil((i + 1) n / num) - 1`` of the n real tokens (PyTorch's
    ``adaptive_avg_pool1d`` bins), padding left out.

    Args:
        text_feats (Tensor): (B, L, D).
        text_mask (Tensor, optional): (B, L) bool, True on real tokens;
            None: all L tokens are real.
        num (int): Number of queries.

    Returns:
        Tensor: (B, num, D).
    """
    if text_mask is None:
        return F.adaptive_avg_pool1d(text_feats.transpose(1, 2),
                                     num).transpose(1, 2)
    mask = text_mask.bool()
    n = mask.sum(1, keepdim=True)  # (B, 1)
    # (B, L) index among the real tokens (cumsum of int64: ONNX's CumSum
    # takes no bool)
    rank = mask.long().cumsum(1) - 1
    i = torch.arange(num, device=mask.device)[None, :, None]  # (1, Q, 1)
    start = torch.div(i * n[..., None], num, rounding_mode='floor')
    end = -torch.div(-(i + 1) * n[..., None], num, rounding_mode='floor')
    member = mask[:, None] & (rank[:, None] >= start) & (rank[:, None] < end)
    weights = member.to(text_feats.dtype) / (end - start).to(
        text_feats.dtype)  # (B, Q, L)
    return torch.einsum('bql,bld->bqd', weights, text_feats)


@MODELS.register_module()
class CascadedPrompter(BaseModule):
    """RSRefSeg 2 prompter: text queries -> image refinement -> SAM prompts.

    From RSRefSeg 2 (KyanChen/RSRefSeg2). With patch features ``V``
    (B, D, h, w) -> tokens (B, hw, D), token features ``T`` (B, L, Dt) and
    the sentence feature ``t_g`` (B, Dt) of the text tower:

    1. **Decoupled text queries.** Two sets of ``num_text_queries`` queries
       ``Q1``, ``Q2`` (B, Q, Dt) start from ``T`` pooled into Q bins
       (``init_type='textpool'``: both sets equal), from learnt embeddings
       (``'learnable'``) or from zeros (``'zero'``), each with a learnt
       positional embedding (``has_pe``). ``two_queries_text_attn_depth``
       blocks of ``two_queries_text_attn_operation_order`` attend them to
       themselves, to ``T`` and to each other (operation names:
       :mod:`~rsrefseg_mm.models.necks.cascade_block`).
    2. **Image refinement by Q1.** ``queries1_to_img_attn_depth`` blocks of
       ``queries1_to_img_attn_operation_order``: ``Q1`` (the ``text``
       stream, positional embedding of Q1) attends to itself, the image
       tokens (``img`` stream, ``imgpe_config``: a learnt (1, D, S, S) map,
       bicubically resized (``align_corners=True``) to (h, w) when the grid
       differs; ``'sine'``: SAM-style random Fourier features of scale D/2;
       ``'none'``) attend to ``Q1``.
    3. **Prompts from Q2 and the image.** ``prompt_queries2_img_attn_depth``
       blocks of ``prompt_queries2_img_attn_operation_order`` on ``Q2``
       (``text``), the refined image (``img``) and ``num_prompts`` prompt
       tokens (``prompt``, (B, P, C), learnt or zero, learnt positional
       embedding): the image attends to ``Q2``, the prompts to themselves,
       to ``Q2`` and to the image.
    4. **Sparse prompts**: the prompt tokens through a 2-layer MLP
       (B, P, C).
    5. **Dense prompt** (``dense_prompt_config``): a vector ``u`` (B, D) -
       ``t_g`` (``proj_from='text_pool'``), an extra first prompt token
       (``'prompt'``), or ``Q2`` / refined ``Q2`` through linear + GELU and
       a Q-wide conv1d + BN + GELU + 1x1 conv1d (``'*text_queries2_pool'``),
       optionally through an MLP (``has_internal_proj``) - against a map
       ``M`` (B, D, h, w): ``V`` or the refined image (``featmap_from``),
       optionally through conv3x3 (D/2) + BN + GELU + conv3x3 (D)
       (``has_internal_conv``). ``M`` is resized (bilinear,
       ``align_corners=True``) to ``dense_prompt_size`` before
       (``up_strategy='preup'``) or the logits after (``'postup'``):
       ``dense = s * cos(M, u) + b`` (B, 1, Hm, Wm), ``s`` (exp'd) and
       ``b`` the text tower's ``logit_scale`` / ``logit_bias``.

    The defaults are the authors' RRSIS-D config (the same for RISBench and
    RefSegRS): 3 text queries from text pooling, 2 blocks per stage, 9
    sparse prompts, a learnt 32x32 image positional embedding (SigLIP 2
    so400m-patch16-512), dense prompt from the sentence feature against the
    convolved refined image, resized before the cosine. Initialisation is
    the authors': PyTorch's default for the layers, N(0, 1) for the learnt
    embeddings.

    Text padding: with ``mask_text_padding=True`` (default) the padded
    positions of ``text_mask`` are left out of the text pooling and are not
    attended by the queries, so a query depends on its expression only. The
    authors pad to the longest expression of the batch and pool over and
    attend to every position; both agree where an expression has no
    padding. ``False`` reproduces theirs on padded input.

    Activation maps: the dense prompt is this model's image-text logit map,
    so ``global_logits`` (B, Hm, Wm) is the dense prompt and
    ``global_map`` its sigmoid (both None without a dense prompt). There
    are no per-token maps (``local_maps`` is not returned).

    Losses (:meth:`loss`, added by :class:`~rsrefseg_mm.models.RSRefSeg`
    as ``neck.*``): the authors' RRSIS-D config turns on two terms of their
    head, here owned by the prompter:

    * ``loss_query_sep`` = ``query_sep_loss_weight * mean_b cos(mean_q Q1,
      mean_q Q2)^2`` (the two query sets of step 1, pushed apart);
    * ``loss_region_text`` = ``region_text_loss_weight`` x the symmetric
      image-text cross-entropy over the batch (all ranks gathered, without
      their gradient, as the authors do) between each target region's mean
      feature ``normalize(mean_hw(F * m))`` and ``normalize(mean_q Q2)``,
      with logits ``exp(s2) * cos + b2`` (learnt ``s2 = log(1 / 0.07)``,
      ``b2 = log(0.5)`` at start). ``F`` is ``V``
      (``region_text_feats='input'``, the authors') or the refined image
      (``'refined'``); ``m`` is the target mask (label 1; ignored pixels
      count as background) bilinearly resized (``align_corners=True``) to
      (h, w) and thresholded at 0.5. Needs equal batch sizes on all ranks.

    A weight of 0 removes the term (and its parameters).

    Args:
        num_text_queries (int): Q (>= 1).
        text_query_config (dict): ``has_pe`` (bool), ``init_type``
            (``'textpool'``, ``'learnable'`` or ``'zero'``).
        prompt_config (dict): ``has_pe`` (bool), ``init_type``
            (``'learnable'`` or ``'zero'``).
        text_feat_dim (int): Dt.
        two_queries_text_attn_depth (int): Blocks of step 1 (>= 1).
        two_queries_text_attn_operation_order (Sequence[str]): Step 1
            operations (streams ``query1``, ``query2``, ``text``).
        imgpe_config (dict): ``type`` (``'learnable'``, ``'sine'`` or
            ``'none'``) and, for ``'learnable'``, ``size`` S.
        queries1_to_img_attn_depth (int): Blocks of step 2 (>= 0).
        queries1_to_img_attn_operation_order (Sequence[str]): Step 2
            operations (streams ``text`` = Q1, ``img``).
        prompt_queries2_img_attn_depth (int): Blocks of step 3 (>= 0).
        prompt_feat_dim (int): C, SAM's prompt dim (256).
        prompt_queries2_img_attn_operation_order (Sequence[str]): Step 3
            operations (streams ``text`` = Q2, ``img``, ``prompt``).
        num_prompts (int): P.
        dense_prompt_config (dict, optional): ``proj_from``,
            ``has_internal_proj``, ``featmap_from`` (``'clipfeat'`` or
            ``'refined_clipfeat'``), ``has_internal_conv``, ``up_strategy``
            (see step 5). None: no dense prompt.
        img_feat_dim (int): D.
        num_heads (int): Attention heads.
        mlp_dim (int): MLP hidden channels.
        internal_dim (int): Attention q / k / v channels.
        dense_prompt_size (int | tuple[int, int]): SAM mask-input size
            (Hm, Wm), (256, 256) for a 1024 input.
        mask_text_padding (bool): See above. Defaults to True.
        query_sep_loss_weight (float): See above. Defaults to 0.5.
        region_text_loss_weight (float): See above. Defaults to 0.5.
        region_text_feats (str): ``'input'`` or ``'refined'``.
        act_cfg (dict): Activation of the MLPs and the dense-prompt layers
            (exact GELU).
        norm_cfg (dict): Norm of the dense-prompt convs (BN; its 1-d form
            for the conv1d of ``'*text_queries2_pool'``).
        init_cfg (dict, optional): Initialisation config.
    """

    def __init__(self,
                 num_text_queries: int = 3,
                 text_query_config: dict = dict(
                     has_pe=True, init_type='textpool'),
                 prompt_config: dict = dict(
                     has_pe=True, init_type='learnable'),
                 text_feat_dim: int = 1152,
                 two_queries_text_attn_depth: int = 2,
                 two_queries_text_attn_operation_order: Sequence[
                     str] = QUERY_TEXT_ORDER,
                 imgpe_config: dict = dict(type='learnable', size=32),
                 queries1_to_img_attn_depth: int = 2,
                 queries1_to_img_attn_operation_order: Sequence[
                     str] = QUERY1_IMG_ORDER,
                 prompt_queries2_img_attn_depth: int = 2,
                 prompt_feat_dim: int = 256,
                 prompt_queries2_img_attn_operation_order: Sequence[
                     str] = PROMPT_ORDER,
                 num_prompts: int = 9,
                 dense_prompt_config: Optional[dict] = DENSE_PROMPT_CONFIG,
                 img_feat_dim: int = 1152,
                 num_heads: int = 8,
                 mlp_dim: int = 512,
                 internal_dim: int = 512,
                 dense_prompt_size: Union[int, Sequence[int]] = (256, 256),
                 mask_text_padding: bool = True,
                 query_sep_loss_weight: float = 0.5,
                 region_text_loss_weight: float = 0.5,
                 region_text_feats: str = 'input',
                 act_cfg: dict = dict(type='GELU'),
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        if num_text_queries < 1 or two_queries_text_attn_depth < 1:
            raise ValueError(
                'CascadedPrompter needs num_text_queries >= 1 and '
                'two_queries_text_attn_depth >= 1, got '
                f'{num_text_queries} and {two_queries_text_attn_depth}')
        if queries1_to_img_attn_depth < 0 or \
                prompt_queries2_img_attn_depth < 0 or num_prompts < 1:
            raise ValueError('stage depths must be >= 0 and num_prompts >= 1')
        self.text_query_config = self._check_init(
            'text_query_config', text_query_config,
            ('textpool', 'learnable', 'zero'))
        self.prompt_config = self._check_init('prompt_config', prompt_config,
                                              ('learnable', 'zero'))
        self.dense_prompt_config = self._check_dense(dense_prompt_config,
                                                     prompt_feat_dim,
                                                     img_feat_dim,
                                                     text_feat_dim)
        if region_text_feats not in ('input', 'refined'):
            raise ValueError("region_text_feats must be 'input' or "
                             f"'refined', got {region_text_feats!r}")
        if query_sep_loss_weight < 0 or region_text_loss_weight < 0:
            raise ValueError('loss weights must be >= 0')
        if isinstance(dense_prompt_size, int):
            dense_prompt_size = (dense_prompt_size, dense_prompt_size)
        self.num_text_queries = num_text_queries
        self.text_feat_dim = text_feat_dim
        self.img_feat_dim = img_feat_dim
        self.prompt_feat_dim = prompt_feat_dim
        self.dense_prompt_size = tuple(dense_prompt_size)
        self.mask_text_padding = mask_text_padding
        self.query_sep_loss_weight = float(query_sep_loss_weight)
        self.region_text_loss_weight = float(region_text_loss_weight)
        self.region_text_feats = region_text_feats

        Q, Dt, Di, C = num_text_queries, text_feat_dim, img_feat_dim, \
            prompt_feat_dim
        if self.text_query_config['has_pe']:
            self.query_pos_embed1 = nn.Parameter(torch.randn(Q, Dt))
            self.query_pos_embed2 = nn.Parameter(torch.randn(Q, Dt))
        if self.text_query_config['init_type'] == 'learnable':
            self.query_embed1 = nn.Parameter(torch.randn(Q, Dt))
            self.query_embed2 = nn.Parameter(torch.randn(Q, Dt))

        def blocks(depth, order, dims):
            return nn.ModuleList([
                CascadeBlock(order, dims, num_heads, internal_dim, mlp_dim,
                             act_cfg) for _ in range(depth)
            ])

        self.query_text_layers = blocks(two_queries_text_attn_depth,
                                        two_queries_text_attn_operation_order,
                                        dict(query1=Dt, query2=Dt, text=Dt))

        pe_type = imgpe_config.get('type')
        if pe_type == 'learnable':
            size = imgpe_config['size']
            self.img_pos_embed = nn.Parameter(torch.randn(1, Di, size, size))
        elif pe_type == 'sine':
            if Di % 2:
                raise ValueError(f"imgpe 'sine' needs an even img_feat_dim, "
                                 f'got {Di}')
            self.img_pos_embed = PositionEmbeddingRandom(Di // 2, Di // 2)
        elif pe_type != 'none':
            raise ValueError("imgpe_config.type must be 'learnable', 'sine' "
                             f"or 'none', got {pe_type!r}")
        self.imgpe_type = pe_type

        self.query1_img_layers = blocks(queries1_to_img_attn_depth,
                                        queries1_to_img_attn_operation_order,
                                        dict(text=Dt, img=Di))
        self.prompt_layers = blocks(prompt_queries2_img_attn_depth,
                                    prompt_queries2_img_attn_operation_order,
                                    dict(text=Dt, img=Di, prompt=C))

        dense = self.dense_prompt_config
        P = num_prompts + 1 if dense and dense['proj_from'] == 'prompt' \
            else num_prompts
        if self.prompt_config['has_pe']:
            self.prompt_pos_embed = nn.Parameter(torch.randn(P, C))
        if self.prompt_config['init_type'] == 'learnable':
            self.prompt_embed = nn.Parameter(torch.randn(P, C))
        self.num_prompts = num_prompts
        self.sparse_mlp = CascadeMLP(C, mlp_dim, C, act_cfg)

        if dense and dense['proj_from'].endswith('text_queries2_pool'):
            norm1d = dict(norm_cfg)
            if norm1d['type'] == 'BN':
                norm1d['type'] = 'BN1d'
            self.dense_pool_fc = nn.Sequential(
                nn.Linear(Dt, Dt), build_activation_layer(act_cfg))
            self.dense_pool_conv = nn.Sequential(
                nn.Conv1d(Dt, Dt, kernel_size=Q),
                build_norm_layer(norm1d, Dt)[1],
                build_activation_layer(act_cfg), nn.Conv1d(Dt, Dt, 1))
        if dense and dense['has_internal_proj']:
            in_dim = C if dense['proj_from'] == 'prompt' else Dt
            self.dense_proj = CascadeMLP(in_dim, mlp_dim, Di, act_cfg)
        if dense and dense['has_internal_conv']:
            self.dense_conv = nn.Sequential(
                nn.Conv2d(Di, Di // 2, 3, padding=1),
                build_norm_layer(norm_cfg, Di // 2)[1],
                build_activation_layer(act_cfg),
                nn.Conv2d(Di // 2, Di, 3, padding=1))

        if self.region_text_loss_weight > 0:
            self.region_text_logit_scale = nn.Parameter(
                torch.tensor(math.log(1 / 0.07)))
            self.region_text_logit_bias = nn.Parameter(
                torch.tensor(math.log(0.5)))

    @staticmethod
    def _check_init(name: str, cfg: dict, kinds: Sequence[str]) -> dict:
        unknown = set(cfg) - {'has_pe', 'init_type'}
        if unknown or cfg.get('init_type') not in kinds:
            raise ValueError(
                f'{name} takes has_pe (bool) and init_type in {list(kinds)}'
                f', got {dict(cfg)}')
        return dict(
            has_pe=bool(cfg.get('has_pe', True)), init_type=cfg['init_type'])

    @staticmethod
    def _check_dense(cfg: Optional[dict], C: int, Di: int,
                     Dt: int) -> Optional[dict]:
        if cfg is None:
            return None
        keys = set(DENSE_PROMPT_CONFIG)
        if set(cfg) - keys:
            raise ValueError(f'dense_prompt_config: unknown keys '
                             f'{sorted(set(cfg) - keys)} (expected '
                             f'{sorted(keys)})')
        cfg = dict(DENSE_PROMPT_CONFIG, **cfg)
        checks = dict(
            proj_from=_DENSE_FROM,
            featmap_from=('clipfeat', 'refined_clipfeat'),
            up_strategy=('preup', 'postup'))
        for key, allowed in checks.items():
            if cfg[key] not in allowed:
                raise ValueError(f'dense_prompt_config.{key} must be one of '
                                 f'{list(allowed)}, got {cfg[key]!r}')
        vec_dim = Di if cfg['has_internal_proj'] else (
            C if cfg['proj_from'] == 'prompt' else Dt)
        if vec_dim != Di:
            raise ValueError(
                f'dense_prompt_config: the {cfg["proj_from"]!r} vector has '
                f'{vec_dim} channels, the image map {Di}; set '
                'has_internal_proj=True')
        return cfg

    def image_pos_embed(self, h: int, w: int) -> Optional[Tensor]:
        """(1, h * w, D) positional encoding of the image tokens, or None.
        """
        if self.imgpe_type == 'none':
            return None
        if self.imgpe_type == 'sine':
            pe = self.img_pos_embed((h, w))[None]
        else:
            pe = self.img_pos_embed
            if tuple(pe.shape[-2:]) != (h, w):
                pe = F.interpolate(
                    pe, size=(h, w), mode='bicubic', align_corners=True)
        return pe.flatten(2).transpose(1, 2)

    def _initial(self, param_name: str, B: int, shape: Sequence[int],
                 ref: Tensor) -> Tensor:
        param = getattr(self, param_name, None)
        if param is None:
            return ref.new_zeros(B, *shape)
        return param.to(ref.dtype)[None].expand(B, -1, -1)

    def _text_key_mask(self, text_mask: Optional[Tensor],
                       T: Tensor) -> Optional[Tensor]:
        if text_mask is None or not self.mask_text_padding:
            return None
        if tuple(text_mask.shape) != tuple(T.shape[:2]):
            raise ValueError(f'text_mask {tuple(text_mask.shape)} does not '
                             f'match text_feats {tuple(T.shape)}')
        mask = text_mask.to(T.device).bool()
        empty = (~mask.any(1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f'CascadedPrompter: text_mask rows {empty} '
                             'have no token')
        return None if bool(mask.all()) else mask

    def forward(self, feats: Dict[str, Tensor]) -> Dict[str, Optional[Tensor]]:
        """Compute SAM prompts.

        Args:
            feats (dict): Backbone outputs: ``img_feats`` (B, D, h, w),
                ``text_feats`` (B, L, Dt), ``text_global`` (B, Dt),
                optional ``text_mask`` (B, L) bool, ``logit_scale``
                (0-dim, exp'd) and optional ``logit_bias`` (needed for the
                dense prompt).

        Returns:
            dict: ``sparse_prompts`` (B, P, C), ``dense_prompts``
            (B, 1, Hm, Wm) or None, ``global_logits`` (B, Hm, Wm) (the dense
            prompt) and ``global_map`` (its sigmoid) or None,
            ``text_queries1`` / ``text_queries2`` (B, Q, Dt) after step 1,
            ``refined_img_feats`` (B, D, h, w) after step 3 and
            ``img_feats`` (the input, for :meth:`loss`).
        """
        for key in ('img_feats', 'text_feats', 'text_global'):
            if key not in feats:
                raise KeyError(f'CascadedPrompter needs `{key}` in the '
                               f'backbone outputs, got keys {sorted(feats)}')
        V = feats['img_feats']
        T = feats['text_feats'].to(V.dtype)
        t_g = feats['text_global'].to(V.dtype)
        B, D, h, w = V.shape
        if D != self.img_feat_dim or T.dim() != 3 or T.shape[0] != B or \
                T.shape[2] != self.text_feat_dim or \
                t_g.shape != (B, self.text_feat_dim):
            raise ValueError(
                f'CascadedPrompter(img_feat_dim={self.img_feat_dim}, '
                f'text_feat_dim={self.text_feat_dim}) got img_feats '
                f'{tuple(V.shape)}, text_feats {tuple(T.shape)}, '
                f'text_global {tuple(t_g.shape)}')
        key_mask = self._text_key_mask(feats.get('text_mask'), T)
        Q, Dt = self.num_text_queries, self.text_feat_dim

        # 1. decoupled text queries
        pe1 = self._initial('query_pos_embed1', B, (Q, Dt), V) \
            if self.text_query_config['has_pe'] else None
        pe2 = self._initial('query_pos_embed2', B, (Q, Dt), V) \
            if self.text_query_config['has_pe'] else None
        if self.text_query_config['init_type'] == 'textpool':
            q1 = q2 = text_pool_queries(T, key_mask, Q)
        else:
            q1 = self._initial('query_embed1', B, (Q, Dt), V)
            q2 = self._initial('query_embed2', B, (Q, Dt), V)
        s = dict(query1=q1, query2=q2, text=T)
        for layer in self.query_text_layers:
            s = layer(
                s,
                pos=dict(query1=pe1, query2=pe2),
                key_masks=dict(text=key_mask))
        q1, q2 = s['query1'], s['query2']

        # 2. image tokens refined by Q1
        img_pe = self.image_pos_embed(h, w)
        if img_pe is not None:
            img_pe = img_pe.to(V.dtype)
        s = dict(img=V.flatten(2).transpose(1, 2), text=q1)
        for layer in self.query1_img_layers:
            s = layer(s, pos=dict(img=img_pe, text=pe1))

        # 3. prompt tokens from Q2 and the image
        P = self.num_prompts + int(self._dense_from() == 'prompt')
        C = self.prompt_feat_dim
        prompt_pe = self._initial('prompt_pos_embed', B, (P, C), V) \
            if self.prompt_config['has_pe'] else None
        s = dict(
            img=s['img'],
            text=q2,
            prompt=self._initial('prompt_embed', B, (P, C), V))
        for layer in self.prompt_layers:
            s = layer(s, pos=dict(img=img_pe, text=pe2, prompt=prompt_pe))
        prompt, refined_q2 = s['prompt'], s['text']
        refined = s['img'].transpose(1, 2).reshape(B, D, h, w)

        # 4. sparse prompts
        dense_vec = None
        if self._dense_from() == 'prompt':
            dense_vec, prompt = prompt[:, 0], prompt[:, 1:]
        sparse = self.sparse_mlp(prompt)

        # 5. dense prompt
        dense = None
        if self.dense_prompt_config is not None:
            dense = self.dense_prompt(feats, V, refined, t_g, q2, refined_q2,
                                      dense_vec)
        return dict(
            sparse_prompts=sparse,
            dense_prompts=dense,
            global_logits=None if dense is None else dense[:, 0],
            global_map=None if dense is None else dense[:, 0].sigmoid(),
            text_queries1=q1,
            text_queries2=q2,
            refined_img_feats=refined,
            img_feats=V)

    def _dense_from(self) -> Optional[str]:
        cfg = self.dense_prompt_config
        return None if cfg is None else cfg['proj_from']

    def dense_prompt(self, feats: dict, V: Tensor, refined: Tensor,
                     t_g: Tensor, q2: Tensor, refined_q2: Tensor,
                     prompt_vec: Optional[Tensor]) -> Tensor:
        """Step 5: the dense prompt (B, 1, Hm, Wm) (see the class doc).

        Args:
            feats (dict): Backbone outputs (``logit_scale``, optional
                ``logit_bias``).
            V (Tensor): (B, D, h, w) input patch features.
            refined (Tensor): (B, D, h, w) refined image.
            t_g (Tensor): (B, Dt) sentence feature.
            q2 (Tensor): (B, Q, Dt) Q2 after step 1.
            refined_q2 (Tensor): (B, Q, Dt) Q2 after step 3.
            prompt_vec (Tensor, optional): (B, C) the extra prompt token.
        """
        cfg = self.dense_prompt_config
        if feats.get('logit_scale') is None:
            raise KeyError('CascadedPrompter needs `logit_scale` in the '
                           'backbone outputs for the dense prompt')
        src = cfg['proj_from']
        if src == 'prompt':
            u = prompt_vec
        elif src == 'text_pool':
            u = t_g
        else:
            u = q2 if src == 'text_queries2_pool' else refined_q2
            u = self.dense_pool_conv(self.dense_pool_fc(u).transpose(1, 2))
            u = u[..., 0]
        if cfg['has_internal_proj']:
            u = self.dense_proj(u)
        fmap = V if cfg['featmap_from'] == 'clipfeat' else refined
        if cfg['has_internal_conv']:
            fmap = self.dense_conv(fmap)
        if cfg['up_strategy'] == 'preup':
            fmap = F.interpolate(
                fmap,
                size=self.dense_prompt_size,
                mode='bilinear',
                align_corners=True)
        cos = torch.einsum('bchw,bc->bhw', F.normalize(fmap, dim=1),
                           F.normalize(u, dim=1))[:, None]
        scale = torch.as_tensor(
            feats['logit_scale'], device=cos.device).to(cos.dtype)
        logits = cos * scale
        if feats.get('logit_bias') is not None:
            logits = logits + torch.as_tensor(
                feats['logit_bias'], device=cos.device).to(cos.dtype)
        if cfg['up_strategy'] == 'postup':
            logits = F.interpolate(
                logits,
                size=self.dense_prompt_size,
                mode='bilinear',
                align_corners=True)
        return logits

    def loss(self, outputs: Dict[str, Tensor],
             data_samples: SampleList) -> Dict[str, Tensor]:
        """The prompter's training terms (see the class doc).

        Args:
            outputs (dict): :meth:`forward` outputs (``text_queries1``,
                ``text_queries2``, ``img_feats`` / ``refined_img_feats``).
            data_samples (list[SegDataSample]): ``gt_sem_seg`` (1, H, W),
                1 = target.

        Returns:
            dict[str, Tensor]: ``loss_query_sep`` and ``loss_region_text``
            (those with a weight > 0).
        """
        losses = {}
        q1 = F.normalize(outputs['text_queries1'].mean(1), dim=1)
        q2 = F.normalize(outputs['text_queries2'].mean(1), dim=1)
        if self.query_sep_loss_weight > 0:
            cos = F.cosine_similarity(q1, q2, dim=1)
            losses['loss_query_sep'] = self.query_sep_loss_weight * \
                cos.square().mean()
        if self.region_text_loss_weight > 0:
            losses['loss_region_text'] = self.region_text_loss_weight * \
                self.region_text_loss(outputs, q2, data_samples)
        return losses

    def region_text_loss(self, outputs: Dict[str, Tensor], text: Tensor,
                         data_samples: SampleList) -> Tensor:
        """Symmetric image-text cross-entropy of target regions and
        expressions over the (gathered) batch.

        Args:
            outputs (dict): :meth:`forward` outputs.
            text (Tensor): (B, Dt) normalised mean of Q2.
            data_samples (list[SegDataSample]): With ``gt_sem_seg``.

        Returns:
            Tensor: The unweighted loss (0-dim).
        """
        key = 'img_feats' if self.region_text_feats == 'input' else \
            'refined_img_feats'
        fmap = outputs[key]
        if len(data_samples) != fmap.shape[0]:
            raise ValueError(f'{len(data_samples)} data samples for a batch '
                             f'of {fmap.shape[0]}')
        gt = torch.stack([ds.gt_sem_seg.data for ds in data_samples])
        fg = (gt.to(fmap.device) == 1).to(fmap.dtype)  # (B, 1, H, W)
        region = F.interpolate(
            fg, size=fmap.shape[-2:], mode='bilinear',
            align_corners=True) > 0.5
        vec = F.normalize((fmap * region).mean((2, 3)), dim=1)
        rank, world = get_dist_info()
        if world > 1:
            vec = self._gather(vec, rank)
            text = self._gather(text, rank)
        scale = self.region_text_logit_scale.exp()
        logits_img = scale * vec @ text.t() + self.region_text_logit_bias
        logits_text = scale * text @ vec.t() + self.region_text_logit_bias
        labels = torch.arange(logits_img.shape[0], device=logits_img.device)
        return (F.cross_entropy(logits_img, labels) +
                F.cross_entropy(logits_text, labels)) / 2

    @staticmethod
    def _gather(x: Tensor, rank: int) -> Tensor:
        """All ranks' rows of ``x``, only this rank's with gradient."""
        parts = all_gather(x.detach())
        parts[rank] = x
        return torch.cat(parts)


#: Names of the authors' ``CascadedPrompter`` parameters (left) and ours.
_AUTHORS_RENAMES = (
    ('text_query_pe_embedding1', 'query_pos_embed1'),
    ('text_query_pe_embedding2', 'query_pos_embed2'),
    ('text_query_embedding1', 'query_embed1'),
    ('text_query_embedding2', 'query_embed2'),
    ('img_pe.positional_embedding',
     'img_pos_embed.positional_encoding_gaussian_matrix'),
    ('img_pe', 'img_pos_embed'),
    ('prompt_pe_embedding', 'prompt_pos_embed'),
    ('prompt_embedding', 'prompt_embed'),
    ('sparse_prompt_mlp.', 'sparse_mlp.'),
    ('dense_prompt_pool_mlp_1.', 'dense_pool_fc.'),
    ('dense_prompt_pool_mlp_2.', 'dense_pool_conv.'),
    ('dense_prompt_mlp.', 'dense_proj.'),
    ('dense_prompt_conv.', 'dense_conv.'),
)
_AUTHORS_STAGES = dict(
    two_queries_text_attn_layers='query_text_layers',
    queries1_to_img_attn_layers='query1_img_layers',
    prompt_queries2_img_attn_layers='prompt_layers')
#: The authors' head (``PseudoSegHead``) holds the learnt scale and bias of
#: the region-text loss (``*2``) and of a per-image loss (``*1``) that their
#: configs leave off.
_AUTHORS_HEAD = {
    'logit_scale2': 'region_text_logit_scale',
    'logit_bias2': 'region_text_logit_bias',
    'logit_scale1': None,
    'logit_bias1': None,
}


def authors_prompter_key_map(
        keys: Iterable[str],
        prompter_prefix: str = 'prompter.',
        head_prefix: str = 'decode_head.',
        neck_prefix: str = 'neck.') -> Dict[str, Optional[str]]:
    """Our names of the RSRefSeg 2 prompter parameters of an authors'
    checkpoint (``RefSegEncoderDecoder.state_dict()``).

    Args:
        keys (Iterable[str]): Keys of their state dict; those under neither
            ``prompter_prefix`` nor ``head_prefix`` are left out of the map.
        prompter_prefix (str): Their prompter's prefix.
        head_prefix (str): Their head's prefix (the region-text loss
            scale and bias).
        neck_prefix (str): Our neck's prefix.

    Returns:
        dict[str, str | None]: Their key -> our key (None: a parameter that
        this model does not use).

    Raises:
        ValueError: A key under the prefixes that the map does not know.
    """
    out: Dict[str, Optional[str]] = {}
    for key in keys:
        if key.startswith(head_prefix):
            name = key[len(head_prefix):]
            if name not in _AUTHORS_HEAD:
                raise ValueError(f'unknown RSRefSeg 2 head key {key!r}')
            new = _AUTHORS_HEAD[name]
            out[key] = None if new is None else neck_prefix + new
            continue
        if not key.startswith(prompter_prefix):
            continue
        name = key[len(prompter_prefix):]
        m = re.fullmatch(r'([a-z0-9_]+)\.(\d+)\.([a-z0-9_]+)\.(.+)', name)
        if m and m.group(1) in _AUTHORS_STAGES:
            stage, i, op, rest = m.groups()
            new = f'{_AUTHORS_STAGES[stage]}.{i}.ops.{op}.{rest}'
        else:
            new = None
            for old, ours in _AUTHORS_RENAMES:
                if name == old or (old.endswith('.') and name.startswith(old)):
                    new = ours + name[len(old):]
                    break
            if new is None:
                raise ValueError(f'unknown RSRefSeg 2 prompter key {key!r}')
        out[key] = neck_prefix + new
    return out
