"""Window partition of SAM token grids in one pass, padding included.

segment-anything's windowed blocks pad the normalised tokens with zeros
(``F.pad``: one copy), cut them into windows (``permute`` + ``contiguous``:
a second copy), run ``qkv`` on every padded token, and after attention
undo both (a third copy into the padded grid, a fourth to crop it) before
the residual add. Since ``qkv(0)`` is the ``qkv`` bias, the padded tokens'
queries, keys and values are known without the GEMM, so

* :func:`window_partition_padded` writes the ``qkv`` output of the real
  tokens straight into the window layout and fills the padded positions
  with a per-channel value (the bias): one pass over the data;
* :func:`window_unpartition_add` adds the windows' real tokens to the
  residual, reading the window layout directly: no copy at all.

Both are ``torch.autograd.Function`` s whose backward is the same single
pass in the other direction (the gradient of the pad value is the sum of
the gradients of the padded positions), so stock's gradients are
reproduced, that of the ``qkv`` bias included. Under ``torch.compile``
they are written as functional pad / select / permute expressions instead,
which Inductor fuses into one kernel each (the in-place region writes of
the eager versions would break the graph).

Grids: a (H, W) grid with window ``ws`` has ``fh = H // ws`` full window
rows and ``rh = H % ws`` remaining rows (same for columns); windows are
numbered row-major, ``ceil(H / ws) * ceil(W / ws)`` per image, exactly as
``segment_anything.modeling.image_encoder.window_partition``.
"""
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as F

# (window-layout index, grid slice unflatten spec) per region, see _regions
Region = Tuple[tuple, tuple, Optional[Tuple[int, tuple]]]


def _regions(H: int, W: int, ws: int) -> Iterator[Region]:
    """Rectangles of real tokens with a uniform window structure.

    Yields, for each of the (up to four) regions full/partial windows along
    height x width, the index into the window layout viewed as
    ``(B, nh, ws, nw, ws, C)`` (``img``), the slice of the (B, H, W, C)
    grid, and the ``unflatten`` calls that give the grid slice the shape of
    the ``img`` slice.
    """
    fh, rh = divmod(H, ws)
    fw, rw = divmod(W, ws)
    rows = []
    if fh:
        rows.append(((slice(0, fh), slice(None)), slice(0, fh * ws), (fh, ws)))
    if rh:
        rows.append(((fh, slice(0, rh)), slice(fh * ws, H), None))
    cols = []
    if fw:
        cols.append(((slice(0, fw), slice(None)), slice(0, fw * ws), (fw, ws)))
    if rw:
        cols.append(((fw, slice(0, rw)), slice(fw * ws, W), None))
    for r_img, r_grid, r_split in rows:
        for c_img, c_grid, c_split in cols:
            img_index = (slice(None), *r_img, *c_img)
            splits = []
            if r_split is not None:
                splits.append((1, r_split))
            if c_split is not None:
                # the column dim moves right by one when the rows were split
                splits.append((3 if r_split is not None else 2, c_split))
            yield img_index, (slice(None), r_grid, c_grid), tuple(splits)


def _grid_view(x: torch.Tensor, grid_index: tuple, splits: tuple):
    out = x[grid_index]
    for dim, sizes in splits:
        out = out.unflatten(dim, sizes)
    return out


def _window_grid_shape(H: int, W: int, ws: int) -> Tuple[int, int]:
    return -(-H // ws), -(-W // ws)


def _partition(x: torch.Tensor, pad: Optional[torch.Tensor],
               ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nh * nw, ws, ws, C), padded with ``pad``."""
    B, H, W, C = x.shape
    nh, nw = _window_grid_shape(H, W, ws)
    out = x.new_empty(B, nh, nw, ws, ws, C)
    img = out.permute(0, 1, 3, 2, 4, 5)  # (B, nh, ws, nw, ws, C) view
    for img_index, grid_index, splits in _regions(H, W, ws):
        img[img_index].copy_(_grid_view(x, grid_index, splits))
    rh, rw = H % ws, W % ws
    fill = x.new_zeros(()) if pad is None else pad.to(x.dtype)
    if rh:
        img[:, nh - 1, rh:].copy_(fill.expand_as(img[:, nh - 1, rh:]))
    if rw:
        img[:, :, :, nw - 1,
            rw:].copy_(fill.expand_as(img[:, :, :, nw - 1, rw:]))
    return out.view(B * nh * nw, ws, ws, C)


def _unpartition(windows: torch.Tensor, B: int, H: int, W: int,
                 ws: int) -> torch.Tensor:
    """(B * nh * nw, ws, ws, C) -> (B, H, W, C), real tokens only."""
    C = windows.shape[-1]
    nh, nw = _window_grid_shape(H, W, ws)
    img = windows.reshape(B, nh, nw, ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    out = windows.new_empty(B, H, W, C)
    for img_index, grid_index, splits in _regions(H, W, ws):
        _grid_view(out, grid_index, splits).copy_(img[img_index])
    return out


def _pad_grad(windows: torch.Tensor, B: int, H: int, W: int,
              ws: int) -> torch.Tensor:
    """Sum of the window-layout gradient over the padded positions: (C,)."""
    C = windows.shape[-1]
    nh, nw = _window_grid_shape(H, W, ws)
    img = windows.reshape(B, nh, nw, ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    fh, rh = divmod(H, ws)
    rw = W % ws
    total = windows.new_zeros(C, dtype=torch.float32)
    if rh:  # padded rows, every column (padded columns included)
        total += img[:, nh - 1, rh:].float().sum(dim=(0, 1, 2, 3))
    if rw:  # padded columns of the real rows
        total += img[:, :fh, :, nw - 1, rw:].float().sum(dim=(0, 1, 2, 3))
        if rh:
            total += img[:, fh, :rh, nw - 1, rw:].float().sum(dim=(0, 1, 2))
    return total


class _WindowPartition(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x: torch.Tensor, pad: Optional[torch.Tensor],
                ws: int) -> torch.Tensor:
        ctx.shape = x.shape
        ctx.ws = ws
        ctx.pad_dtype = None if pad is None else pad.dtype
        return _partition(x, pad, ws)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        B, H, W, _ = ctx.shape
        grad = grad.contiguous()
        grad_x = _unpartition(grad, B, H, W, ctx.ws) \
            if ctx.needs_input_grad[0] else None
        grad_pad = None
        if ctx.needs_input_grad[1]:
            grad_pad = _pad_grad(grad, B, H, W, ctx.ws).to(ctx.pad_dtype)
        return grad_x, grad_pad, None


class _WindowUnpartitionAdd(torch.autograd.Function):

    @staticmethod
    def forward(ctx, shortcut: torch.Tensor, windows: torch.Tensor,
                ws: int) -> torch.Tensor:
        B, H, W, C = shortcut.shape
        nh, nw = _window_grid_shape(H, W, ws)
        ctx.ws = ws
        ctx.dtypes = (shortcut.dtype, windows.dtype)
        img = windows.reshape(B, nh, nw, ws, ws, C).permute(0, 1, 3, 2, 4, 5)
        out = torch.empty_like(
            shortcut,
            dtype=torch.promote_types(shortcut.dtype, windows.dtype),
            memory_format=torch.contiguous_format)
        for img_index, grid_index, splits in _regions(H, W, ws):
            torch.add(
                _grid_view(shortcut, grid_index, splits),
                img[img_index],
                out=_grid_view(out, grid_index, splits))
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad_windows = None
        if ctx.needs_input_grad[1]:
            grad_windows = _partition(grad.contiguous(), None,
                                      ctx.ws).to(ctx.dtypes[1])
        return grad.to(ctx.dtypes[0]), grad_windows, None


def _partition_functional(x: torch.Tensor, pad: Optional[torch.Tensor],
                          ws: int) -> torch.Tensor:
    """:func:`_partition` as pad / where / permute (for torch.compile)."""
    B, H, W, C = x.shape
    nh, nw = _window_grid_shape(H, W, ws)
    xp = F.pad(x, (0, 0, 0, nw * ws - W, 0, nh * ws - H))
    if pad is not None and (H % ws or W % ws):
        rows = torch.arange(nh * ws, device=x.device) < H
        cols = torch.arange(nw * ws, device=x.device) < W
        real = (rows[:, None] & cols[None, :])[..., None]
        xp = torch.where(real, xp, pad.to(x.dtype))
    return xp.view(B, nh, ws, nw, ws, C).permute(0, 1, 3, 2, 4,
                                                 5).reshape(-1, ws, ws, C)


def _unpartition_add_functional(shortcut: torch.Tensor, windows: torch.Tensor,
                                ws: int) -> torch.Tensor:
    """:class:`_WindowUnpartitionAdd` as one add (for torch.compile)."""
    B, H, W, C = shortcut.shape
    nh, nw = _window_grid_shape(H, W, ws)
    grid = windows.view(B, nh, nw, ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    grid = grid.reshape(B, nh * ws, nw * ws, C)[:, :H, :W]
    return shortcut + grid


def _tracing() -> bool:
    """Under ``torch.compile`` or ``torch.jit`` tracing (ONNX export): the
    graph-friendly one-op forms, no ``out=`` writes into views."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def window_partition_padded(
        x: torch.Tensor,
        window_size: int,
        pad: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Cut a token grid into windows, padding with a per-channel value.

    Equals ``window_partition(F.pad(x, ...) + pad)`` restricted to what it
    writes: real tokens are copied once into the window layout and padded
    positions are set to ``pad`` (zeros when None), gradients included.

    Args:
        x (Tensor): Tokens (B, H, W, C).
        window_size (int): Window side ``ws``.
        pad (Tensor, optional): Value (C,) of the padded positions, e.g.
            the ``qkv`` bias when ``x`` is the ``qkv`` output of the real
            tokens. None pads with zeros.

    Returns:
        Tensor: Windows (B * nh * nw, ws, ws, C), contiguous, windows
        numbered row-major per image as in segment-anything.
    """
    if x.dim() != 4:
        raise ValueError(f'expected tokens (B, H, W, C), got {tuple(x.shape)}')
    if pad is not None and pad.shape != x.shape[-1:]:
        raise ValueError(f'pad must have shape ({x.shape[-1]},), got '
                         f'{tuple(pad.shape)}')
    if _tracing():
        return _partition_functional(x, pad, window_size)
    return _WindowPartition.apply(x, pad, window_size)


def window_unpartition_add(shortcut: torch.Tensor, windows: torch.Tensor,
                           window_size: int) -> torch.Tensor:
    """Residual add of windowed tokens, dropping the padded positions.

    Equals ``shortcut + window_unpartition(windows, ws, pad_hw, (H, W))``
    without building the unpartitioned tensor: the add reads the window
    layout directly.

    Args:
        shortcut (Tensor): Residual (B, H, W, C).
        windows (Tensor): Windows (B * nh * nw, ws, ws, C), as returned by
            :func:`window_partition_padded` for a (B, H, W, .) grid.
        window_size (int): Window side ``ws``.

    Returns:
        Tensor: (B, H, W, C), contiguous.
    """
    B, H, W, C = shortcut.shape
    nh, nw = _window_grid_shape(H, W, window_size)
    expected = (B * nh * nw, window_size, window_size, C)
    if tuple(windows.shape) != expected:
        raise ValueError(f'windows must have shape {expected} for a '
                         f'{tuple(shortcut.shape)} grid, got '
                         f'{tuple(windows.shape)}')
    if _tracing():
        return _unpartition_add_functional(shortcut, windows, window_size)
    return _WindowUnpartitionAdd.apply(shortcut, windows, window_size)
