"""CLIP image + text backbone of RSRefSeg.

RSRefSeg: `Referring Remote Sensing Image Segmentation with Foundation
Models <https://arxiv.org/abs/2501.06809>`_. The backbone encodes the image
into CLIP patch features and the referring expression into per-token and
global (end-of-text) CLIP features.
"""
import copy
from functools import lru_cache
from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.registry import MODELS

from ...peft import apply_tuning
from ..base_text_image_backbone import BaseTextImageBackbone
from .clip_checkpoint import infer_clip_arch, load_clip_checkpoint
from .clip_tokenizer import CLIPTokenizer
from .clip_transformer import CLIPTextTower, CLIPVisionTower, to_2tuple

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

DEFAULT_LORA_TARGETS = ('attn.qkv', 'attn.proj')


@lru_cache()
def _shared_tokenizer(context_length: int) -> CLIPTokenizer:
    """One tokenizer per context length (building one takes ~0.3 s)."""
    return CLIPTokenizer(context_length=context_length)


@MODELS.register_module()
class CLIPBackbone(BaseTextImageBackbone):
    """OpenAI CLIP image and text towers.

    The image tower takes RGB pixel values 0-255 (what
    ``SegDataPreProcessor(mean=None, std=None, bgr_to_rgb=True)`` yields),
    resizes them bicubically to ``image_size`` (only when the size differs)
    and applies CLIP's mean/std. The text tower tokenizes the expressions
    with CLIP's BPE (:class:`~rsrefseg_mm.models.backbones.clip.clip_tokenizer.
    CLIPTokenizer`) into ``context_length`` (77) ids; ``text_feats`` keeps
    all 77 positions (no trimming to the longest expression) and
    ``text_mask`` marks the real ones.

    Outputs (:meth:`forward`): ``img_feats`` (B, D, h, w) patch tokens after
    ``ln_post`` and ``proj`` (h = image_size / patch), ``img_global`` (B, D)
    (= CLIP ``encode_image``), ``text_feats`` (B, 77, D) after ``ln_final``
    and ``text_projection``, ``text_global`` (B, D) at the end-of-text token
    (= CLIP ``encode_text``), ``text_mask`` (B, 77) True from SOT to EOT,
    ``logit_scale`` 0-dim ``logit_scale.exp()``.

    Attention runs through ``F.scaled_dot_product_attention``; the attention
    projections are ``nn.Linear`` layers named ``attn.qkv`` and ``attn.proj``
    in both towers (LoRA targets), the MLP ones ``mlp.c_fc``/``mlp.c_proj``.
    Parameters live under ``visual.*`` (image), ``text.*`` (text) and
    ``logit_scale``.

    Weights (``checkpoint``) are loaded in ``__init__`` before the tuning
    modes are applied, so LoRA wraps pretrained layers. ``init_weights`` does
    not re-initialise anything (the runner calls it after ``__init__``)
    unless an ``init_cfg`` is given.

    Args:
        arch (str | dict): ``'ViT-B/16'``, ``'ViT-L/14'``, ``'ViT-L/14@336'``
            (aliases ``'ViT-B-16'``, ``'ViT-L-14'``, ``'ViT-L-14-336'``) or a
            dict with the keys of :attr:`arch_zoo` entries (``image_size,
            patch_size, embed_dims, num_layers, num_heads, output_dims,
            text_embed_dims, text_num_layers, text_num_heads,
            context_length, vocab_size``; optional ``quick_gelu``, default
            True, and ``stem_channels``, a convolutional stem for towers
            trained from scratch, see
            :class:`~.clip_transformer.CLIPVisionTower`).
        checkpoint (str, optional): OpenAI TorchScript archive
            (``checkpoints/ViT-B-16.pt``) or plain state dict with
            OpenAI/open_clip/converted keys. None: random initialisation.
        strict_load (bool): ``checkpoint`` must hold every tensor of the
            arch and nothing else; False loads what fits and logs the rest
            as a warning. Defaults to True.
        image_size (int | tuple[int, int], optional): Resolution the image
            tower runs at. Defaults to the arch's pretraining size; another
            size bicubically resizes the positional embedding on the fly
            (the stored parameter keeps the pretraining grid).
        image_tuning (dict): Tuning of the image tower: ``mode`` in
            ``'frozen'``, ``'lora'``, ``'full'``; for LoRA also ``rank``,
            ``alpha``, ``drop_rate``, ``targets`` (default
            ``['attn.qkv', 'attn.proj']``). See
            :func:`~rsrefseg_mm.models.peft.tuning.apply_tuning`.
        text_tuning (dict): Same for the text tower.
        logit_trainable (bool): Whether CLIP's temperature is learnt.
            Defaults to False.
        fast_attn (bool): Attention via SDPA (True) or an explicit softmax.
        with_cp (bool): Activation checkpointing of both towers' blocks
            while training. Defaults to False.
        resize_antialias (bool): Anti-alias the bicubic down-sizing to
            ``image_size``. CLIP was trained on PIL bicubic resizes, which
            anti-alias when shrinking, so True (default) is the closer
            match for e.g. 1024 -> 224.
        init_cfg (dict, optional): mmengine init config; leave None when
            ``checkpoint`` is used.
    """

    arch_zoo: Dict[str, dict] = {
        'ViT-B/16':
        dict(
            image_size=224,
            patch_size=16,
            embed_dims=768,
            num_layers=12,
            num_heads=12,
            output_dims=512,
            text_embed_dims=512,
            text_num_layers=12,
            text_num_heads=8,
            context_length=77,
            vocab_size=49408),
        'ViT-L/14':
        dict(
            image_size=224,
            patch_size=14,
            embed_dims=1024,
            num_layers=24,
            num_heads=16,
            output_dims=768,
            text_embed_dims=768,
            text_num_layers=12,
            text_num_heads=12,
            context_length=77,
            vocab_size=49408),
    }
    # same weights layout as ViT-L/14, fine-tuned at 336 px
    arch_zoo['ViT-L/14@336'] = dict(arch_zoo['ViT-L/14'], image_size=336)
    arch_aliases = {
        'ViT-B-16': 'ViT-B/16',
        'ViT-L-14': 'ViT-L/14',
        'ViT-L-14-336': 'ViT-L/14@336',
        'ViT-L-14-336px': 'ViT-L/14@336',
    }
    _required_arch_keys = tuple(arch_zoo['ViT-B/16'].keys())
    family = 'CLIP'
    tower_names = ('visual', 'text')

    def __init__(self,
                 arch: Union[str, dict] = 'ViT-B/16',
                 checkpoint: Optional[str] = None,
                 strict_load: bool = True,
                 image_size: Optional[Union[int, Sequence[int]]] = None,
                 image_tuning: dict = dict(
                     mode='lora', rank=16, alpha=16, drop_rate=0.1),
                 text_tuning: dict = dict(
                     mode='lora', rank=16, alpha=16, drop_rate=0.1),
                 logit_trainable: bool = False,
                 fast_attn: bool = True,
                 with_cp: bool = False,
                 resize_antialias: bool = True,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.arch_name, cfg = self._parse_arch(arch)
        self.arch_settings = cfg
        self.image_size = to_2tuple(
            image_size if image_size is not None else cfg['image_size'])
        if any(s % cfg['patch_size'] for s in self.image_size):
            raise ValueError(f'image_size {self.image_size} must be a '
                             f"multiple of the patch size {cfg['patch_size']}")
        self.resize_antialias = resize_antialias
        self.checkpoint = checkpoint
        quick_gelu = cfg.get('quick_gelu', True)

        self.visual = CLIPVisionTower(
            image_size=cfg['image_size'],
            patch_size=cfg['patch_size'],
            embed_dims=cfg['embed_dims'],
            num_layers=cfg['num_layers'],
            num_heads=cfg['num_heads'],
            output_dims=cfg['output_dims'],
            quick_gelu=quick_gelu,
            fast_attn=fast_attn,
            with_cp=with_cp,
            stem_channels=cfg.get('stem_channels'))
        self.text = CLIPTextTower(
            context_length=cfg['context_length'],
            vocab_size=cfg['vocab_size'],
            embed_dims=cfg['text_embed_dims'],
            num_layers=cfg['text_num_layers'],
            num_heads=cfg['text_num_heads'],
            output_dims=cfg['output_dims'],
            quick_gelu=quick_gelu,
            fast_attn=fast_attn,
            with_cp=with_cp)
        self.logit_scale = nn.Parameter(torch.tensor(1 / 0.07).log())
        self.tokenizer = _shared_tokenizer(cfg['context_length'])
        if cfg['vocab_size'] < self.tokenizer.vocab_size:
            raise ValueError(
                f"arch {self.arch_name}: vocab_size {cfg['vocab_size']} is "
                f'smaller than the CLIP tokenizer vocabulary '
                f'({self.tokenizer.vocab_size})')
        self.register_buffer(
            'pixel_mean',
            torch.tensor(CLIP_MEAN).view(1, 3, 1, 1) * 255,
            persistent=False)
        self.register_buffer(
            'pixel_std',
            torch.tensor(CLIP_STD).view(1, 3, 1, 1) * 255,
            persistent=False)

        if checkpoint is not None:
            self.load_checkpoint(checkpoint, strict=strict_load)
        self.image_tuning = apply_tuning(
            self.visual,
            name='CLIP image tower',
            default_targets=DEFAULT_LORA_TARGETS,
            **dict(image_tuning or dict(mode='full')))
        self.text_tuning = apply_tuning(
            self.text,
            name='CLIP text tower',
            default_targets=DEFAULT_LORA_TARGETS,
            **dict(text_tuning or dict(mode='full')))
        self.logit_scale.requires_grad_(logit_trainable)

    # ------------------------------------------------------------ set-up
    @classmethod
    def _parse_arch(cls, arch: Union[str, dict]):
        if isinstance(arch, str):
            name = cls.arch_aliases.get(arch, arch)
            if name not in cls.arch_zoo:
                raise ValueError(
                    f'unknown CLIP arch {arch!r}; choose one of '
                    f'{sorted(cls.arch_zoo) + sorted(cls.arch_aliases)} or '
                    f'pass a dict with keys {list(cls._required_arch_keys)}')
            return name, copy.deepcopy(cls.arch_zoo[name])
        if isinstance(arch, dict):
            missing = [k for k in cls._required_arch_keys if k not in arch]
            extra = set(arch) - set(
                cls._required_arch_keys) - {'quick_gelu', 'stem_channels'}
            if missing or extra:
                raise ValueError(f'custom CLIP arch: missing keys {missing}, '
                                 f'unknown keys {sorted(extra)}')
            return 'custom', dict(arch)
        raise TypeError(f'arch must be a str or dict, got {type(arch)}')

    def load_checkpoint(self, path: str, strict: bool = True) -> None:
        """Load CLIP weights (see :mod:`.clip_checkpoint`) into the towers.

        Args:
            path (str): The weight file.
            strict (bool): Missing / unexpected tensors are an error.

        Raises:
            FileNotFoundError: ``path`` does not exist (says what to get).
            ValueError: The file holds another architecture (shape
                mismatch), no CLIP weights at all, or (``strict``) not
                exactly the arch's tensors.
        """
        state_dict = load_clip_checkpoint(path)
        self.load_checked_state_dict(
            path,
            state_dict,
            expected_keys="'visual.conv1.weight', 'token_embedding.weight'",
            arch_hint=f'The file looks like {infer_clip_arch(state_dict)}; '
            'set the backbone arch to match it.',
            strict=strict)

    # ------------------------------------------------------------ forward
    def preprocess(self, inputs: torch.Tensor) -> torch.Tensor:
        """RGB 0-255 (B, 3, H, W) -> CLIP-normalised (B, 3, *image_size)."""
        if inputs.dim() != 4 or inputs.shape[1] != 3:
            raise ValueError(f'CLIPBackbone expects RGB images (B, 3, H, W), '
                             f'got shape {tuple(inputs.shape)}')
        x = inputs.float()
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(
                x,
                size=self.image_size,
                mode='bicubic',
                align_corners=False,
                antialias=self.resize_antialias).clamp_(0, 255)
        return (x - self.pixel_mean) / self.pixel_std

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Tokenize expressions -> (B, context_length) long ids.

        Raises:
            ValueError: An expression is empty or whitespace-only.
        """
        return self.tokenizer(self.check_texts(texts))

    def encode_image(self, inputs: torch.Tensor):
        """RGB 0-255 images -> (img_global (B, D), img_feats (B, D, h, w))."""
        return self._run(self.visual, self.preprocess(inputs))

    def encode_text(self, texts: Sequence[str], device=None):
        """Expressions -> (text_global (B, D), text_feats (B, L, D),
        text_mask (B, L))."""
        tokens = self.tokenize(texts).to(device or self.logit_scale.device)
        return self._run(self.text, tokens)

    def logit_outputs(self) -> Dict[str, torch.Tensor]:
        """``logit_scale``: 0-dim ``logit_scale.exp()`` (CLIP has no bias;
        the neck owns a learnable one)."""
        return dict(logit_scale=self.logit_scale.exp())
