"""Validation of referring expressions, shared by every runtime.

The text towers clean every expression before tokenising it: CLIP's
tokenizer repairs mojibake with ``ftfy``, unescapes HTML entities twice and
collapses whitespace (:class:`rsrefseg_core.tokenizers.CLIPBPE`); SigLIP's
also drops ASCII punctuation
(:func:`rsrefseg_core.tokenizers.canonicalize_text`). An expression that is
empty *after* that cleaning (``"&nbsp;"``, ``"&amp;#32;"``, a run of
no-break spaces, ``"..."``) would reach the model as an empty prompt, so it
is rejected where it enters: when a dataset loads, in the inference API, in
both predictors (PyTorch and ONNX Runtime) and in the demos.

Torch-free: NumPy, ftfy and regex (the tokenizers' cleaners) only.
"""
from typing import Optional

from .tokenizers import basic_clean, canonicalize_text, whitespace_clean


def clean_expression(text: str) -> str:
    """The expression as CLIP's text tower sees it (before lower-casing):
    ftfy, HTML unescaping, whitespace collapsed."""
    return whitespace_clean(basic_clean(text))


def check_expression(text, where: str, max_chars: Optional[int] = None) -> str:
    """Return ``text`` stripped, or raise naming ``where`` if it is empty
    (or too long).

    Args:
        text: The expression (anything; non-strings are rejected).
        where (str): Where it comes from (file, ref id), for the message.
        max_chars (int, optional): Most characters of the stripped text,
            checked before the clean-up (a server takes expressions from
            anyone). None (default): any length.

    Returns:
        str: ``text.strip()``.

    Raises:
        ValueError: When ``text`` is not a string, is longer than
            ``max_chars``, is empty after the ftfy / HTML / whitespace
            clean-up, or holds nothing but punctuation (empty for SigLIP's
            tokenizer).
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f'{where}: the expression is empty or missing '
                         f'({text!r})')
    if max_chars is not None and len(text.strip()) > max_chars:
        raise ValueError(f'{where}: the expression is too long '
                         f'({len(text.strip())} characters, at most '
                         f'{max_chars})')
    cleaned = clean_expression(text)
    if not cleaned:
        raise ValueError(f'{where}: the expression is empty after ftfy / '
                         f'HTML clean-up ({text!r} -> {cleaned!r})')
    if not canonicalize_text(cleaned):
        raise ValueError(f'{where}: the expression is empty after ftfy / '
                         f'HTML clean-up and punctuation removal ({text!r} '
                         f'-> {cleaned!r} -> \'\'); SigLIP drops ASCII '
                         'punctuation')
    return text.strip()


__all__ = ['check_expression', 'clean_expression']
