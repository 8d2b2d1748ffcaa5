"""What every image + text backbone of RSRefSeg shares."""
import logging
from abc import abstractmethod
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModule

from ..peft import is_trainable


def _cast_floating(x, dtype: torch.dtype):
    """``x`` in ``dtype`` if it is a floating-point tensor, else ``x``."""
    if torch.is_tensor(x) and x.is_floating_point():
        return x.to(dtype)
    return x


class BaseTextImageBackbone(BaseModule):  # BaseModule's metaclass: ABCMeta
    """Base of :class:`CLIPBackbone` and :class:`SigLIPBackbone`.

    Subclasses own an image tower and a text tower (attribute names in
    ``tower_names``), a ``tokenizer`` with a ``clean(text) -> str`` method,
    and implement :meth:`encode_image`, :meth:`encode_text` and
    :meth:`logit_outputs`. This class gives them the shared behaviour:
    weights are set in ``__init__`` (``init_weights`` only runs an explicit
    ``init_cfg``), frozen towers stay in eval mode and run without autograd
    graph, expressions are validated before tokenizing, loaded state dicts
    are checked against the arch, and :meth:`forward` returns the output
    contract the prompter reads.
    """

    #: Name used in messages ('CLIP', 'SigLIP').
    family: str = ''
    #: Attribute names of the (image, text) towers.
    tower_names: Tuple[str, str] = ('', '')

    @property
    def compile_targets(self) -> Tuple[str, str]:
        """Hot paths for :func:`~rsrefseg_mm.engine.compile_hot_paths`:
        the two towers (fixed-shape inputs)."""
        return self.tower_names

    def init_weights(self) -> None:
        """Keep the weights set in ``__init__`` unless ``init_cfg`` is set."""
        if self.init_cfg is not None:
            super().init_weights()

    def train(self, mode: bool = True) -> 'BaseTextImageBackbone':
        """Set train mode; frozen towers always stay in eval mode."""
        super().train(mode)
        for name in self.tower_names:
            tower = getattr(self, name)
            if not is_trainable(tower):
                tower.eval()
        return self

    @staticmethod
    def _run(tower: nn.Module, *args):
        """Run a tower; without autograd graph when it has nothing to train.

        Floating-point inputs (the preprocessed images) are cast to the
        tower's dtype: bf16 when DeepSpeed's ``bf16`` casts the model (the
        preprocessing computes in float32); no change in float32 models or
        under autocast.
        """
        floats = [p.dtype for p in tower.parameters() if p.is_floating_point()]
        if floats:
            args = tuple(_cast_floating(a, floats[0]) for a in args)
        if is_trainable(tower):
            return tower(*args)
        with torch.no_grad():
            return tower(*args)

    def check_texts(self, texts: Sequence[str]) -> List[str]:
        """Validate expressions before tokenizing.

        Raises:
            TypeError: An expression is not a str.
            ValueError: An expression is empty once the tokenizer has cleaned
                it (whitespace, and for SigLIP punctuation, removed).
        """
        if isinstance(texts, str):
            texts = [texts]
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f'expression {i} must be a str, got '
                                f'{type(text).__name__}: {text!r}')
            if not self.tokenizer.clean(text):
                raise ValueError(
                    f'expression {i} of the batch is empty or whitespace-only '
                    f'once the {self.family} tokenizer has cleaned it: '
                    f'{text!r}')
        return list(texts)

    def load_checked_state_dict(self,
                                path: str,
                                state_dict: Dict[str, torch.Tensor],
                                expected_keys: str,
                                arch_hint: str,
                                strict: bool = True) -> None:
        """Load ``state_dict`` (read from ``path``) after checking it.

        Args:
            path (str): The file, for messages.
            state_dict (dict): Converted to this backbone's keys.
            expected_keys (str): Example keys, for the "no weights" error.
            arch_hint (str): What to do when the shapes differ.
            strict (bool): Missing or unexpected keys are an error; False
                loads what fits and logs them as a warning.

        Raises:
            ValueError: No key in common, tensors of another shape, or
                (``strict``) missing / unexpected keys.
        """
        own = self.state_dict()
        common = [k for k in state_dict if k in own]
        if not common:
            raise ValueError(
                f'{path} holds no {self.family} weights (keys such as '
                f'{expected_keys} expected; found e.g. '
                f'{list(state_dict)[:5]})')
        mismatched = [
            f'{k}: file {tuple(state_dict[k].shape)} vs model '
            f'{tuple(own[k].shape)}' for k in common
            if state_dict[k].shape != own[k].shape
        ]
        if mismatched:
            raise ValueError(
                f'{self.family} checkpoint {path} does not match arch '
                f'{self.arch_name!r} ({len(mismatched)} tensors differ, e.g. '
                f'{"; ".join(mismatched[:3])}). {arch_hint}')
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if missing or unexpected:
            msg = (f'{self.family} checkpoint {path} does not match arch '
                   f'{self.arch_name!r} exactly: {len(missing)} missing '
                   f'tensors (left at their initial values), e.g. '
                   f'{missing[:5]}; {len(unexpected)} unexpected tensors, '
                   f'e.g. {unexpected[:5]}.')
            if strict:
                raise ValueError(
                    msg + ' Use the complete checkpoint of the arch, or set '
                    "the backbone's `strict_load=False` to load it "
                    'partially.')
            print_log(
                msg + ' Loaded partially (strict_load=False).',
                logger='current',
                level=logging.WARNING)
        self.load_state_dict(state_dict, strict=False)
        print_log(
            f'{self.family} {self.arch_name}: loaded {len(common)} tensors '
            f'from {path}',
            logger='current')
        self._missing_keys, self._unexpected_keys = missing, unexpected

    @abstractmethod
    def encode_image(self, inputs: torch.Tensor):
        """RGB 0-255 (B, 3, H, W) -> (img_global (B, D), img_feats
        (B, D, h, w))."""

    @abstractmethod
    def encode_text(self, texts: Sequence[str], device=None):
        """Expressions -> (text_global (B, D), text_feats (B, L, D),
        text_mask (B, L) bool)."""

    @abstractmethod
    def logit_outputs(self) -> Dict[str, torch.Tensor]:
        """``logit_scale`` (0-dim, already exponentiated) and, where the
        model has one, ``logit_bias``."""

    def forward(self, inputs: torch.Tensor,
                texts: List[str]) -> Dict[str, torch.Tensor]:
        """Encode images and their referring expressions.

        Args:
            inputs (Tensor): (B, 3, H, W) RGB pixel values 0-255.
            texts (list[str]): B expressions, one per image.

        Returns:
            dict[str, Tensor]: ``img_feats`` (B, D, h, w), ``img_global``
            (B, D), ``text_feats`` (B, L, D), ``text_global`` (B, D),
            ``text_mask`` (B, L) bool and :meth:`logit_outputs`.
        """
        if len(texts) != inputs.shape[0]:
            raise ValueError(f'got {inputs.shape[0]} images but {len(texts)} '
                             f'expressions; one expression per image needed')
        img_global, img_feats = self.encode_image(inputs)
        text_global, text_feats, text_mask = self.encode_text(
            texts, device=inputs.device)
        return dict(
            img_feats=img_feats,
            img_global=img_global,
            text_feats=text_feats,
            text_global=text_global,
            text_mask=text_mask,
            **self.logit_outputs())
