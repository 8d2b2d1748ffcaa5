# The RSRefSeg authors' compute path (transformers SAM + SigLIP) for
# gpu_benchmark.py; benchmark-only dependency: transformers.
"""Time the towers of the RSRefSeg authors' implementation.

The authors' code runs Hugging Face ``transformers`` models: SAM's vision
encoder (``SamVisionModel``) and SigLIP (``SiglipModel``: image and text
towers). :func:`build_authors_models` builds both from configs written in
code, with random weights (nothing is downloaded), at the sizes of an
RSRefSeg model built here:

* SAM from the decode head's ``sam_arch`` (ViT-B for RSRefSeg-b);
* SigLIP either with the sizes of our text-image backbone
  (``siglip='config'``: same widths, depths, heads, MLP widths, patch and
  image size, context length and vocabulary; for the paper's SigLIP
  configs that is the authors' so400m at 384 px itself) or as that so400m
  whatever the config (``'so400m-384'``).

Both run with PyTorch SDPA attention (``attn_implementation='sdpa'``, what
``from_pretrained`` picks by default); SAM's decomposed relative positions
are an SDPA mask there. The prompter and SAM's mask decoder are left out
(< 2 % of RSRefSeg-b's inference FLOPs), so "theirs" is a lower bound of
their time per image.
"""
import statistics
import time
from contextlib import nullcontext
from typing import Dict, Tuple

import torch
import torch.nn as nn

#: SigLIP so400m-patch14-384 (the authors' RSRefSeg configuration)
SO400M_384 = dict(
    vision_config=dict(
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=27,
        num_attention_heads=16,
        image_size=384,
        patch_size=14),
    text_config=dict(
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=27,
        num_attention_heads=16,
        max_position_embeddings=64,
        vocab_size=32000))
SIGLIP_CHOICES = ('config', 'so400m-384')


def sam_vision_config(model: nn.Module):
    """``SamVisionConfig`` with the sizes of ``model``'s SAM image encoder.

    Args:
        model (nn.Module): An RSRefSeg (``decode_head.sam_arch``).
    """
    from transformers import SamVisionConfig

    from rsrefseg_mm.models.sam.sam_builder import sam_arch_settings
    s = sam_arch_settings(model.decode_head.sam_arch)
    return SamVisionConfig(
        hidden_size=s['encoder_embed_dim'],
        num_hidden_layers=s['encoder_depth'],
        num_attention_heads=s['encoder_num_heads'],
        global_attn_indexes=list(s['encoder_global_attn_indexes']),
        window_size=s['encoder_window_size'],
        image_size=s['image_size'],
        patch_size=s['patch_size'],
        output_channels=s['prompt_embed_dim'],
        mlp_dim=int(s['encoder_embed_dim'] * s['encoder_mlp_ratio']))


def siglip_config(model: nn.Module, siglip: str = 'config'):
    """``SiglipConfig`` for the text-image towers.

    Args:
        model (nn.Module): An RSRefSeg whose backbone (CLIP or SigLIP) has
            ``arch_settings`` (for ``siglip='config'``).
        siglip (str): ``'config'`` (sizes of our towers) or
            ``'so400m-384'``.
    """
    from transformers import SiglipConfig
    if siglip == 'so400m-384':
        return SiglipConfig(**SO400M_384)
    if siglip != 'config':
        raise ValueError(f'siglip must be one of {SIGLIP_CHOICES}, got '
                         f'{siglip!r}')
    arch = getattr(model.backbone, 'arch_settings', None)
    keys = ('embed_dims', 'num_layers', 'num_heads', 'image_size',
            'patch_size', 'text_embed_dims', 'text_num_layers',
            'text_num_heads', 'context_length', 'vocab_size')
    if not isinstance(arch, dict) or any(k not in arch for k in keys):
        raise ValueError(
            f'{type(model.backbone).__name__} has no arch_settings with '
            f'{", ".join(keys)}; use siglip=\'so400m-384\' '
            '(--authors-siglip so400m-384)')
    # CLIP archs have 4x MLPs; SigLIP archs name their MLP widths
    return SiglipConfig(
        vision_config=dict(
            hidden_size=arch['embed_dims'],
            intermediate_size=arch.get('hidden_dims', 4 * arch['embed_dims']),
            num_hidden_layers=arch['num_layers'],
            num_attention_heads=arch['num_heads'],
            image_size=arch['image_size'],
            patch_size=arch['patch_size']),
        text_config=dict(
            hidden_size=arch['text_embed_dims'],
            intermediate_size=arch.get('text_hidden_dims',
                                       4 * arch['text_embed_dims']),
            num_hidden_layers=arch['text_num_layers'],
            num_attention_heads=arch['text_num_heads'],
            max_position_embeddings=arch['context_length'],
            vocab_size=arch['vocab_size']))


def build_authors_models(model: nn.Module, siglip: str,
                         device: str) -> Tuple[nn.Module, nn.Module]:
    """Random-weight ``SamVisionModel`` and ``SiglipModel`` in eval mode.

    Args:
        model (nn.Module): The RSRefSeg whose sizes to mirror.
        siglip (str): See :func:`siglip_config`.
        device (str): Where to put them.

    Returns:
        tuple: ``(sam, siglip)``.
    """
    from transformers import SamVisionModel, SiglipModel
    torch.manual_seed(0)
    sam = SamVisionModel._from_config(
        sam_vision_config(model), attn_implementation='sdpa')
    sig = SiglipModel._from_config(
        siglip_config(model, siglip), attn_implementation='sdpa')
    return sam.to(device).eval(), sig.to(device).eval()


def _sync(device: str) -> None:
    if str(device).startswith('cuda'):
        torch.cuda.synchronize()


def benchmark_authors_path(sam: nn.Module, sig: nn.Module, batch_size: int,
                           device: str, amp: bool, warmup: int,
                           repeats: int) -> Dict:
    """Time SAM's vision encoder + SigLIP's towers on random inputs.

    Args:
        sam, sig: From :func:`build_authors_models`.
        batch_size (int): Images (and expressions) per batch.
        device (str): Their device.
        amp (bool): bf16 autocast.
        warmup (int): Untimed iterations.
        repeats (int): Timed iterations (medians reported).

    Returns:
        dict: ``images_per_s``, ``median_s`` (per batch), ``stages``
        (median s per batch of ``SAM vision`` and ``SigLIP``),
        ``attention`` (class names), ``params`` (M).
    """
    sc, tc = sam.config, sig.config
    g = torch.Generator().manual_seed(0)
    pixels_sam = torch.randn(
        batch_size, 3, sc.image_size, sc.image_size, generator=g).to(device)
    vc = tc.vision_config
    pixels_sig = torch.randn(
        batch_size, 3, vc.image_size, vc.image_size, generator=g).to(device)
    ids = torch.randint(
        0,
        tc.text_config.vocab_size,
        (batch_size, tc.text_config.max_position_embeddings),
        generator=g).to(device)
    amp_ctx = (lambda: torch.autocast(
        torch.device(device).type, dtype=torch.bfloat16)) if amp \
        else nullcontext
    stages = {'SAM vision': [], 'SigLIP': []}
    totals = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            _sync(device)
            t0 = time.perf_counter()
            with amp_ctx():
                sam(pixel_values=pixels_sam)
            _sync(device)
            t1 = time.perf_counter()
            with amp_ctx():
                sig(input_ids=ids, pixel_values=pixels_sig)
            _sync(device)
            t2 = time.perf_counter()
            if i >= warmup:
                stages['SAM vision'].append(t1 - t0)
                stages['SigLIP'].append(t2 - t1)
                totals.append(t2 - t0)
    median = statistics.median(totals)
    attention = sorted({
        type(m).__name__
        for m in list(sam.modules()) + list(sig.modules())
        if type(m).__name__.endswith('Attention')
    })
    return dict(
        images_per_s=batch_size / median,
        median_s=median,
        stages={k: statistics.median(v)
                for k, v in stages.items()},
        attention=attention,
        params=dict(
            sam=sum(p.numel() for p in sam.parameters()) / 1e6,
            siglip=sum(p.numel() for p in sig.parameters()) / 1e6),
        batch_size=batch_size)
