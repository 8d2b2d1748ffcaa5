"""SigLIP image + text backbone of RSRefSeg (the paper's encoder).

RSRefSeg (`arXiv 2501.06809 <https://arxiv.org/abs/2501.06809>`_) encodes
image and expression with SigLIP so400m-patch14-384: the patch features of
the image tower (``last_hidden_state``, after the post-LayerNorm) and the
token features of the text tower (after the final LayerNorm, no head) are
filtered by the expression; the sentence feature is the text head on the
last position (``pooler_output``).

RSRefSeg 2 (`KyanChen/RSRefSeg2 <https://github.com/KyanChen/RSRefSeg2>`_)
uses SigLIP 2 so400m-patch16-512. The fixed-resolution SigLIP 2 models have
SigLIP's architecture and key layout (transformers loads them as
``SiglipModel``); they differ in the text vocabulary (Gemma's 256,000
pieces) and the tokenizer. The ``siglip2-*`` archs select both.
"""
import copy
from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.registry import MODELS

from ...peft import apply_tuning
from ..base_text_image_backbone import BaseTextImageBackbone
from .siglip2_tokenizer import SigLIP2Tokenizer
from .siglip_checkpoint import (TOKENIZER_FILES, load_siglip_checkpoint,
                                siglip_tokenizer_path)
from .siglip_tokenizer import SigLIPTokenizer
from .siglip_transformer import SiglipTextTower, SiglipVisionTower

DEFAULT_LORA_TARGETS = ('self_attn.q_proj', 'self_attn.k_proj',
                        'self_attn.v_proj', 'self_attn.out_proj')
#: Tokenizer class per arch ``tokenizer_type``.
TOKENIZERS = {'siglip': SigLIPTokenizer, 'gemma': SigLIP2Tokenizer}
#: Arch keys a custom arch dict may leave out, with their defaults.
OPTIONAL_ARCH_KEYS = dict(tokenizer_type='siglip')


def _arch(image_size,
          patch_size,
          width,
          layers,
          heads,
          mlp,
          vocab=32000,
          tokenizer_type='siglip'):
    return dict(
        image_size=image_size,
        patch_size=patch_size,
        embed_dims=width,
        num_layers=layers,
        num_heads=heads,
        hidden_dims=mlp,
        text_embed_dims=width,
        text_num_layers=layers,
        text_num_heads=heads,
        text_hidden_dims=mlp,
        output_dims=width,
        context_length=64,
        vocab_size=vocab,
        tokenizer_type=tokenizer_type)


def _arch2(image_size, patch_size, width, layers, heads, mlp):
    """A fixed-resolution SigLIP 2 arch: Gemma vocabulary and tokenizer."""
    return _arch(image_size, patch_size, width, layers, heads, mlp, 256000,
                 'gemma')


#: ``text_padding`` choices of :class:`SigLIPBackbone`.
TEXT_PADDINGS = ('context', 'none')


@MODELS.register_module()
class SigLIPBackbone(BaseTextImageBackbone):
    """SigLIP image and text towers (transformers' ``SiglipModel`` layout).

    Same output contract as :class:`CLIPBackbone`: ``img_feats``
    (B, D, h, w) patch features after the post-LayerNorm (27x27 for
    so400m-p14-384, 32x32 for SigLIP 2 so400m-p16-512), ``img_global``
    (B, D) the MAP head output, ``text_feats`` (B, 64, D) after the final
    LayerNorm, ``text_global`` (B, D) the text head on the last position,
    ``text_mask`` (B, 64) True on the tokens and EOS, ``logit_scale``
    (exp'd) and ``logit_bias``.
    Images: RGB 0-255 -> ``x / 255`` -> ``(x - 0.5) / 0.5`` -> bilinear
    resize to ``image_size``
    (``align_corners=False``, no anti-aliasing, as the RSRefSeg authors feed
    the 1024 SAM input to SigLIP). Text: :class:`SigLIPTokenizer` on the
    model's ``spiece.model``, padded to the 64 positions SigLIP was trained
    with and run without attention mask (SigLIP's training setting), so an
    expression's features do not depend on its batch. (The authors pad to the
    longest expression of the batch instead, also without attention mask,
    so every token feature and the sentence feature change with the batch.)

    SigLIP 2 (the ``siglip2-*`` archs, e.g. ``'siglip2-so400m-patch16-512'``
    of RSRefSeg 2): the same towers with a 256,000-piece vocabulary, read
    from the fixed-resolution ``google/siglip2-*`` Hugging Face folders, and
    :class:`SigLIP2Tokenizer` on the folder's Gemma ``tokenizer.model``:
    lower-cased, no BOS, ``<eos>`` appended, padded on the right with
    ``<pad>`` (id 0) to the 64 positions, run without attention mask (as
    SigLIP). ``text_mask`` is True on the tokens and EOS.

    Parameters: ``vision_model.*``, ``text_model.*``, ``logit_scale``,
    ``logit_bias`` (both frozen unless ``logit_trainable``). Projections are
    ``nn.Linear`` layers named ``self_attn.{q,k,v,out}_proj`` and
    ``mlp.fc1/fc2`` (LoRA targets; the text ``head`` too).

    Args:
        arch (str | dict): One of :attr:`arch_zoo` (``'so400m-patch14-384'``,
            ``'base-patch16-224'``, ..., SigLIP 2's
            ``'siglip2-so400m-patch16-512'``, ...) or a dict with its keys
            (``tokenizer_type`` may be left out: ``'siglip'``; ``'gemma'``
            for SigLIP 2).
        checkpoint (str, optional): Hugging Face folder of the model (or its
            ``model.safetensors``) or open_clip's SigLIP checkpoint; see
            :mod:`.siglip_checkpoint`. None: random initialisation.
        strict_load (bool): ``checkpoint`` must hold every tensor of the
            arch and nothing else; False loads what fits and logs the rest
            as a warning. Defaults to True.
        tokenizer (str, optional): ``spiece.model`` (SigLIP 2:
            ``tokenizer.model``). Defaults to the one in the ``checkpoint``
            folder (or beside the checkpoint file).
        tokenizer_cfg (dict, optional): More arguments of the tokenizer
            class, e.g. ``dict(lowercase=False)`` for SigLIP 2 to keep the
            case of the text as the RSRefSeg 2 authors do.
        image_size (int, optional): Resolution the image tower runs at.
            Defaults to the arch's; another size resizes the positions.
        image_tuning (dict): ``mode`` (``'frozen'``, ``'lora'``,
            ``'full'``) and LoRA ``rank``, ``alpha``, ``drop_rate``,
            ``targets`` (default ``self_attn.{q,k,v,out}_proj``).
        text_tuning (dict): Same for the text tower (the authors add
            ``'head'``).
        text_padding (str): How expressions reach the text tower.
            ``'context'`` (default; SigLIP's and SigLIP 2's pre-training):
            padded to the context length, no attention mask, the sentence
            feature read at the last (padded) position. ``'none'``: each
            expression runs at its own length, so the sentence feature is
            its EOS token's, as the RSRefSeg 2 authors' code computes it
            for a batch of one expression (their tokenizer pads to the
            batch's longest; use it for their checkpoints); the token
            features are then zero-padded to the context length and
            ``text_mask`` marks the real tokens. Both are independent of
            the batch.
        logit_trainable (bool): Train ``logit_scale`` / ``logit_bias``.
            False (the authors freeze them).
        with_cp (bool): Activation checkpointing of both towers' blocks.
        init_cfg (dict, optional): Leave None when ``checkpoint`` is used.

    Unlike :class:`CLIPBackbone` there is no ``fast_attn`` switch: SigLIP's
    attention always runs ``F.scaled_dot_product_attention`` (with the
    text padding mask), there is no explicit-softmax path to choose.
    """

    arch_zoo: Dict[str, dict] = {
        'so400m-patch14-384': _arch(384, 14, 1152, 27, 16, 4304),
        'so400m-patch14-224': _arch(224, 14, 1152, 27, 16, 4304),
        'base-patch16-224': _arch(224, 16, 768, 12, 12, 3072),
        'base-patch16-256': _arch(256, 16, 768, 12, 12, 3072),
        'base-patch16-384': _arch(384, 16, 768, 12, 12, 3072),
        'base-patch16-512': _arch(512, 16, 768, 12, 12, 3072),
        'large-patch16-256': _arch(256, 16, 1024, 24, 16, 4096),
        'large-patch16-384': _arch(384, 16, 1024, 24, 16, 4096),
        # SigLIP 2, fixed resolution (transformers' SiglipModel)
        'siglip2-base-patch16-224': _arch2(224, 16, 768, 12, 12, 3072),
        'siglip2-base-patch16-256': _arch2(256, 16, 768, 12, 12, 3072),
        'siglip2-base-patch16-384': _arch2(384, 16, 768, 12, 12, 3072),
        'siglip2-base-patch16-512': _arch2(512, 16, 768, 12, 12, 3072),
        'siglip2-base-patch32-256': _arch2(256, 32, 768, 12, 12, 3072),
        'siglip2-large-patch16-256': _arch2(256, 16, 1024, 24, 16, 4096),
        'siglip2-large-patch16-384': _arch2(384, 16, 1024, 24, 16, 4096),
        'siglip2-large-patch16-512': _arch2(512, 16, 1024, 24, 16, 4096),
        'siglip2-so400m-patch14-224': _arch2(224, 14, 1152, 27, 16, 4304),
        'siglip2-so400m-patch14-384': _arch2(384, 14, 1152, 27, 16, 4304),
        'siglip2-so400m-patch16-256': _arch2(256, 16, 1152, 27, 16, 4304),
        'siglip2-so400m-patch16-384': _arch2(384, 16, 1152, 27, 16, 4304),
        'siglip2-so400m-patch16-512': _arch2(512, 16, 1152, 27, 16, 4304),
    }
    _required_arch_keys = tuple(k for k in arch_zoo['base-patch16-224']
                                if k != 'tokenizer_type')
    family = 'SigLIP'
    tower_names = ('vision_model', 'text_model')

    def __init__(self,
                 arch: Union[str, dict] = 'so400m-patch14-384',
                 checkpoint: Optional[str] = None,
                 strict_load: bool = True,
                 tokenizer: Optional[str] = None,
                 tokenizer_cfg: Optional[dict] = None,
                 image_size: Optional[int] = None,
                 image_tuning: dict = dict(
                     mode='lora', rank=16, alpha=16, drop_rate=0.1),
                 text_tuning: dict = dict(
                     mode='lora', rank=16, alpha=16, drop_rate=0.1),
                 text_padding: str = 'context',
                 logit_trainable: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if text_padding not in TEXT_PADDINGS:
            raise ValueError(f'SigLIPBackbone: text_padding must be one of '
                             f'{TEXT_PADDINGS}, got {text_padding!r}')
        self.text_padding = text_padding
        self.arch_name, cfg = self._parse_arch(arch)
        self.arch_settings = cfg
        # 384 px with 14 px patches: the valid convolution drops the last
        # 6 pixels and yields a 27x27 grid, as SigLIP so400m-p14-384 does
        self.image_size = int(image_size or cfg['image_size'])
        self.checkpoint = checkpoint
        self.vision_model = SiglipVisionTower(
            image_size=cfg['image_size'],
            patch_size=cfg['patch_size'],
            embed_dims=cfg['embed_dims'],
            num_layers=cfg['num_layers'],
            num_heads=cfg['num_heads'],
            hidden_dims=cfg['hidden_dims'],
            with_cp=with_cp)
        self.text_model = SiglipTextTower(
            context_length=cfg['context_length'],
            vocab_size=cfg['vocab_size'],
            embed_dims=cfg['text_embed_dims'],
            num_layers=cfg['text_num_layers'],
            num_heads=cfg['text_num_heads'],
            hidden_dims=cfg['text_hidden_dims'],
            output_dims=cfg['output_dims'],
            with_cp=with_cp)
        # SigLIP's initial temperature / bias (log 10, -10)
        self.logit_scale = nn.Parameter(torch.tensor([10.0]).log())
        self.logit_bias = nn.Parameter(torch.tensor([-10.0]))

        self.tokenizer = TOKENIZERS[cfg['tokenizer_type']](
            self._tokenizer_path(tokenizer, checkpoint, cfg['tokenizer_type']),
            context_length=cfg['context_length'],
            **dict(tokenizer_cfg or {}))
        if self.tokenizer.vocab_size > cfg['vocab_size']:
            raise ValueError(
                f'SigLIP arch {self.arch_name}: the tokenizer '
                f'{self.tokenizer.model_file} has {self.tokenizer.vocab_size} '
                f"pieces, more than the arch's vocab_size "
                f"{cfg['vocab_size']}")

        if checkpoint is not None:
            self.load_checkpoint(checkpoint, strict=strict_load)
        self.image_tuning = apply_tuning(
            self.vision_model,
            name='SigLIP image tower',
            default_targets=DEFAULT_LORA_TARGETS,
            **dict(image_tuning or dict(mode='full')))
        self.text_tuning = apply_tuning(
            self.text_model,
            name='SigLIP text tower',
            default_targets=DEFAULT_LORA_TARGETS,
            **dict(text_tuning or dict(mode='full')))
        self.logit_scale.requires_grad_(logit_trainable)
        self.logit_bias.requires_grad_(logit_trainable)

    # ------------------------------------------------------------ set-up
    @classmethod
    def _parse_arch(cls, arch: Union[str, dict]):
        if isinstance(arch, str):
            if arch not in cls.arch_zoo:
                raise ValueError(
                    f'unknown SigLIP arch {arch!r}; choose one of '
                    f'{sorted(cls.arch_zoo)} or pass a dict with keys '
                    f'{list(cls._required_arch_keys)}')
            return arch, copy.deepcopy(cls.arch_zoo[arch])
        if isinstance(arch, dict):
            missing = [k for k in cls._required_arch_keys if k not in arch]
            extra = set(arch) - set(
                cls._required_arch_keys) - set(OPTIONAL_ARCH_KEYS)
            if missing or extra:
                raise ValueError(f'custom SigLIP arch: missing keys '
                                 f'{missing}, unknown keys {sorted(extra)}')
            cfg = dict(OPTIONAL_ARCH_KEYS, **arch)
            if cfg['tokenizer_type'] not in TOKENIZERS:
                raise ValueError(
                    f'custom SigLIP arch: tokenizer_type '
                    f"{cfg['tokenizer_type']!r} is none of {list(TOKENIZERS)}")
            return 'custom', cfg
        raise TypeError(f'arch must be a str or dict, got {type(arch)}')

    @classmethod
    def arch_tokenizer_type(cls, arch: Union[str, dict]) -> str:
        """``tokenizer_type`` of an arch: ``'siglip'`` or ``'gemma'``."""
        return cls._parse_arch(arch)[1]['tokenizer_type']

    @staticmethod
    def _tokenizer_path(tokenizer: Optional[str],
                        checkpoint: Optional[str],
                        tokenizer_type: str = 'siglip') -> str:
        if tokenizer is not None:
            return tokenizer
        name = TOKENIZER_FILES[tokenizer_type]
        if not checkpoint:
            folder = 'siglip2-so400m-patch16-512' \
                if tokenizer_type == 'gemma' else 'siglip-so400m-patch14-384'
            raise ValueError(
                f'SigLIPBackbone needs the `{name}` of the model: set '
                f'`tokenizer` (e.g. checkpoints/{folder}/{name}) or '
                '`checkpoint` to the Hugging Face folder')
        return siglip_tokenizer_path(checkpoint, tokenizer_type)

    def load_checkpoint(self, path: str, strict: bool = True) -> None:
        """Load SigLIP weights (see :mod:`.siglip_checkpoint`).

        Args:
            path (str): Folder or weight file.
            strict (bool): Missing / unexpected tensors are an error.

        Raises:
            FileNotFoundError: ``path`` does not exist (says what to get).
            ValueError: No SigLIP weights in the file, tensors of another
                arch, or tower weights missing.
        """
        state_dict = load_siglip_checkpoint(path, self.arch_name)
        own = self.state_dict()
        tower_missing = [
            k for k in own
            if k not in state_dict and k.startswith(('vision_model.',
                                                     'text_model.'))
        ]
        if strict and tower_missing and any(k in own for k in state_dict):
            raise ValueError(
                f'SigLIP checkpoint {path} lacks {len(tower_missing)} tensors '
                f'of arch {self.arch_name!r}, e.g. {tower_missing[:5]}')
        self.load_checked_state_dict(
            path,
            state_dict,
            expected_keys="'vision_model.embeddings.patch_embedding.weight' "
            "or open_clip's 'visual.trunk.*'",
            arch_hint='Set the backbone arch to the model the file holds.',
            strict=strict)

    # ------------------------------------------------------------ forward
    def preprocess(self, inputs: torch.Tensor) -> torch.Tensor:
        """RGB 0-255 (B, 3, H, W) -> [-1, 1] at (B, 3, S, S)."""
        if inputs.dim() != 4 or inputs.shape[1] != 3:
            raise ValueError(f'SigLIPBackbone expects RGB images (B, 3, H, '
                             f'W), got shape {tuple(inputs.shape)}')
        x = inputs.float() / 127.5 - 1.0
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = F.interpolate(
                x,
                size=(self.image_size, self.image_size),
                mode='bilinear',
                align_corners=False)
        return x

    def tokenize(self, texts: Sequence[str]):
        """Expressions -> ids (B, 64) long and mask (B, 64) bool.

        Raises:
            ValueError: An expression is empty once SigLIP's canonicalisation
                removes punctuation and whitespace (SigLIP 2: empty or
                whitespace only).
        """
        return self.tokenizer(self.check_texts(texts))

    def encode_image(self, inputs: torch.Tensor):
        """RGB 0-255 -> (img_global (B, D), img_feats (B, D, h, w))."""
        return self._run(self.vision_model, self.preprocess(inputs))

    def encode_text(self, texts: Sequence[str], device=None):
        """Expressions -> (text_global (B, D), text_feats (B, 64, D),
        text_mask (B, 64)); see ``text_padding``."""
        ids, mask = self.tokenize(texts)
        device = device or self.logit_scale.device
        ids, mask = ids.to(device), mask.to(device)
        if self.text_padding == 'context':
            text_global, text_feats = self._run(self.text_model, ids)
            return text_global, text_feats, mask
        lengths = mask.sum(1)
        text_global = text_feats = None
        for n in lengths.unique().tolist():
            rows = (lengths == n).nonzero().flatten()
            g, f = self._run(self.text_model, ids[rows, :n])
            if text_global is None:
                text_global = g.new_zeros(len(texts), g.shape[1])
                text_feats = f.new_zeros(len(texts), ids.shape[1], f.shape[2])
            text_global = text_global.index_copy(0, rows, g)
            text_feats = text_feats.index_copy(
                0, rows, F.pad(f, (0, 0, 0, ids.shape[1] - n)))
        return text_global, text_feats, mask

    def logit_outputs(self) -> Dict[str, torch.Tensor]:
        """0-dim ``exp(logit_scale)`` and ``logit_bias`` (SigLIP's own)."""
        return dict(
            logit_scale=self.logit_scale.exp()[0],
            logit_bias=self.logit_bias[0])
