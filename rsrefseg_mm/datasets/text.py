"""Validation of referring expressions.

The text tower cleans every expression before tokenising it (``ftfy``
mojibake repair, HTML unescaping twice, whitespace collapsing; see
:class:`rsrefseg_mm.models.utils.CLIPTokenizer`). An expression that is
empty *after* that cleaning (``"&nbsp;"``, ``"&amp;#32;"``, a run of
no-break spaces) would reach the model as an empty prompt, so it is
rejected where it enters: when a dataset loads, in the inference API and in
the demos.
"""
from ..models.utils.clip_tokenizer import basic_clean, whitespace_clean


def clean_expression(text: str) -> str:
    """The expression as the text tower sees it (before lower-casing)."""
    return whitespace_clean(basic_clean(text))


def check_expression(text, where: str) -> str:
    """Return ``text`` stripped, or raise naming ``where`` if it is empty.

    Args:
        text: The expression (anything; non-strings are rejected).
        where (str): Where it comes from (file, ref id), for the message.

    Returns:
        str: ``text.strip()``.

    Raises:
        ValueError: When ``text`` is not a string or is empty after the
            text tower's ftfy / HTML / whitespace clean-up.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f'{where}: the expression is empty or missing '
                         f'({text!r})')
    if not clean_expression(text):
        raise ValueError(f'{where}: the expression is empty after ftfy / '
                         f'HTML clean-up ({text!r} -> '
                         f'{clean_expression(text)!r})')
    return text.strip()
