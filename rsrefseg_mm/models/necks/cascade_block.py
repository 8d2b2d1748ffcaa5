"""Attention block driven by an operation order, the unit of
:class:`~rsrefseg_mm.models.necks.CascadedPrompter` (RSRefSeg 2).

A block holds token streams (``query1``, ``query2``, ``text``, ``img``,
``prompt``) and applies a list of named operations to them in order. Every
operation updates one stream, its *target*:

* ``self_attn``: attention of the target to itself,
* ``cross_attn``: attention of the target to a *source* stream,
* ``mlp``: a two-layer MLP,
* ``norm``: a LayerNorm.

Attention always takes ``target + pos(target)`` as query,
``source + pos(source)`` as key and ``source`` as value (``pos`` is the
stream's positional encoding, 0 when it has none). Attention and MLP outputs
are added to the target (residual); a LayerNorm replaces it.

Operation names follow the RSRefSeg 2 configs, so that their operation
orders (and checkpoints) carry over unchanged. A name is one of these
prefixes, then nothing or ``_`` and any suffix that makes it unique
(``norm_query1_2``, ``self_attn_text_text_1``); ``n != m`` in ``{1, 2}``:

* ``self_attn_query_query{n}``: self-attention of ``query{n}``;
* ``cross_attn_query_text_query{n}_text``: ``query{n}`` attends to
  ``text``;
* ``cross_attn_query_query_query{n}_query{m}``: ``query{n}`` attends to
  ``query{m}``;
* ``self_attn_text``, ``self_attn_prompt``: self-attention;
* ``cross_attn_img_text``, ``cross_attn_prompt_text``,
  ``cross_attn_prompt_img``: the first stream attends to the second;
* ``mlp_{s}``, ``norm_{s}`` with ``s`` in ``query1``, ``query2``, ``text``,
  ``img``, ``prompt``.
"""
import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_activation_layer
from torch import Tensor

#: (pattern, operation, target group, source group); groups index the
#: pattern's groups, a string is a fixed stream name.
_OP_PATTERNS = (
    (r'self_attn_query_query([12])', 'self_attn', 1, 1),
    (r'cross_attn_query_text_query([12])_text', 'cross_attn', 1, 'text'),
    (r'cross_attn_query_query_query([12])_query([12])', 'cross_attn', 1, 2),
    (r'self_attn_(text|prompt)', 'self_attn', 1, 1),
    (r'cross_attn_(img)_(text)', 'cross_attn', 1, 2),
    (r'cross_attn_(prompt)_(text|img)', 'cross_attn', 1, 2),
    (r'(mlp|norm)_query([12])', None, 2, None),
    (r'(mlp|norm)_(text|img|prompt)', None, 2, None),
)


def parse_cascade_op(name: str) -> Tuple[str, str, Optional[str]]:
    """Operation, target stream and source stream of an operation name.

    Args:
        name (str): E.g. ``'cross_attn_query_text_query1_text'``.

    Returns:
        tuple: ``(op, target, source)``; ``op`` is ``'self_attn'``,
        ``'cross_attn'``, ``'mlp'`` or ``'norm'``, ``source`` is None for
        ``mlp`` and ``norm``. Query streams are ``'query1'`` / ``'query2'``.

    Raises:
        ValueError: The name matches no prefix of the table (module doc).
    """
    for pattern, op, target, source in _OP_PATTERNS:
        m = re.match(pattern + r'(?:_|$)', name)
        if m is None:
            continue

        def stream(g):
            if isinstance(g, str):
                return g
            s = m.group(g)
            return f'query{s}' if s in '12' else s

        if op is None:
            return m.group(1), stream(target), None
        src = stream(source)
        if op == 'cross_attn' and src == stream(target):
            break  # cross_attn_query_query_query1_query1
        return op, stream(target), src
    raise ValueError(
        f'unknown operation {name!r}: expected self_attn_*, cross_attn_*, '
        'mlp_* or norm_* of the CascadedPrompter streams (see '
        'rsrefseg_mm/models/necks/cascade_block.py)')


class CascadeAttention(nn.Module):
    """Multi-head attention with projections to ``internal_dim``.

    Args:
        query_dim (int): Channels of the queries (and of the output).
        num_heads (int): Heads; must divide ``internal_dim``.
        internal_dim (int): Channels of the projected q, k, v.
        kv_dim (int, optional): Channels of keys and values (default
            ``query_dim``).
    """

    def __init__(self,
                 query_dim: int,
                 num_heads: int,
                 internal_dim: int,
                 kv_dim: Optional[int] = None) -> None:
        super().__init__()
        if internal_dim % num_heads:
            raise ValueError(f'num_heads ({num_heads}) must divide '
                             f'internal_dim ({internal_dim})')
        kv_dim = query_dim if kv_dim is None else kv_dim
        self.num_heads = num_heads
        self.q_proj = nn.Linear(query_dim, internal_dim)
        self.k_proj = nn.Linear(kv_dim, internal_dim)
        self.v_proj = nn.Linear(kv_dim, internal_dim)
        self.out_proj = nn.Linear(internal_dim, query_dim)

    def _heads(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        return x.reshape(B, N, self.num_heads,
                         C // self.num_heads).transpose(1, 2)

    def forward(self,
                q: Tensor,
                k: Tensor,
                v: Tensor,
                key_mask: Optional[Tensor] = None) -> Tensor:
        """Attend.

        Args:
            q (Tensor): (B, Nq, query_dim).
            k (Tensor): (B, Nk, kv_dim).
            v (Tensor): (B, Nk, kv_dim).
            key_mask (Tensor, optional): (B, Nk) bool, False on keys that
                no query may attend (padding); None: all keys.

        Returns:
            Tensor: (B, Nq, query_dim).
        """
        q = self._heads(self.q_proj(q))
        k = self._heads(self.k_proj(k))
        v = self._heads(self.v_proj(v))
        mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        B, H, N, c = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(B, N, H * c))


class CascadeMLP(nn.Module):
    """Two linear layers with an activation between them.

    Args:
        in_dim (int): Input channels.
        hidden_dim (int): Hidden channels.
        out_dim (int): Output channels.
        act_cfg (dict): Activation (GELU, exact, by default).
    """

    def __init__(self,
                 in_dim: int,
                 hidden_dim: int,
                 out_dim: int,
                 act_cfg: dict = dict(type='GELU')) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [nn.Linear(in_dim, hidden_dim),
             nn.Linear(hidden_dim, out_dim)])
        self.act = build_activation_layer(act_cfg)

    def forward(self, x: Tensor) -> Tensor:
        """(..., in_dim) -> (..., out_dim)."""
        return self.layers[1](self.act(self.layers[0](x)))


class CascadeBlock(nn.Module):
    """Operations on token streams, applied in a configured order.

    Args:
        operation_order (Sequence[str]): Operation names (module doc), each
            once.
        stream_dims (dict[str, int]): Channels of each stream the block may
            use; an operation on another stream is an error.
        num_heads (int): Attention heads.
        internal_dim (int): Attention q / k / v channels.
        mlp_dim (int): MLP hidden channels.
        act_cfg (dict): MLP activation.
    """

    def __init__(self,
                 operation_order: Sequence[str],
                 stream_dims: Dict[str, int],
                 num_heads: int,
                 internal_dim: int,
                 mlp_dim: int,
                 act_cfg: dict = dict(type='GELU')) -> None:
        super().__init__()
        operation_order = list(operation_order)
        if not operation_order:
            raise ValueError('operation_order is empty')
        dup = [n for n in operation_order if operation_order.count(n) > 1]
        dup = sorted(set(dup))
        if dup:
            raise ValueError(f'operation_order repeats {dup}')
        self.operation_order = operation_order
        self.plan: List[Tuple[str, str, str, Optional[str]]] = []
        self.ops = nn.ModuleDict()
        for name in operation_order:
            op, target, source = parse_cascade_op(name)
            for s in (target, source):
                if s is not None and s not in stream_dims:
                    raise ValueError(
                        f'operation {name!r} uses the {s!r} stream; this '
                        f'stage has {sorted(stream_dims)}')
            dim = stream_dims[target]
            if op in ('self_attn', 'cross_attn'):
                module = CascadeAttention(dim, num_heads, internal_dim,
                                          stream_dims[source])
            elif op == 'mlp':
                module = CascadeMLP(dim, mlp_dim, dim, act_cfg)
            else:
                module = nn.LayerNorm(dim)
            self.ops[name] = module
            self.plan.append((name, op, target, source))

    def forward(
        self,
        streams: Dict[str, Tensor],
        pos: Optional[Dict[str, Optional[Tensor]]] = None,
        key_masks: Optional[Dict[str, Optional[Tensor]]] = None
    ) -> Dict[str, Tensor]:
        """Apply the operations.

        Args:
            streams (dict[str, Tensor]): (B, N_s, C_s) per stream.
            pos (dict, optional): Positional encoding per stream,
                broadcastable to the stream; missing or None: none.
            key_masks (dict, optional): (B, N_s) bool per stream, False on
                tokens that must not be attended (used when the stream is
                a key); missing or None: all tokens.

        Returns:
            dict[str, Tensor]: The updated streams (a new dict).
        """
        streams = dict(streams)
        pos = pos or {}
        key_masks = key_masks or {}

        def with_pos(s):
            p = pos.get(s)
            return streams[s] if p is None else streams[s] + p

        for name, op, target, source in self.plan:
            module = self.ops[name]
            if op == 'norm':
                streams[target] = module(streams[target])
                continue
            if op == 'mlp':
                out = module(streams[target])
            else:
                out = module(
                    with_pos(target), with_pos(source), streams[source],
                    key_masks.get(source))
            streams[target] = streams[target] + out
        return streams
