"""Captions and panel labels in any script (Unicode fonts, not ``?``).

OpenCV's Hershey fonts only draw ASCII (``"l'église"`` becomes
``"l'?glise"``). Text is drawn here with PIL and TrueType fonts, choosing a
font per character: DejaVu Sans (shipped with matplotlib, so always present:
Latin, Greek, Cyrillic, ...), then the fonts in ``$RSREFSEG_FONT``
(``os.pathsep``-separated), then well-known system fonts (Noto CJK, ...) and
finally any installed font fontconfig reports for the character. A character
no font covers is drawn as the font's empty box and logged once with how to
fix it (install e.g. Debian's ``fonts-noto-cjk`` or set ``RSREFSEG_FONT``).
"""
import logging
import os
import os.path as osp
import shutil
import subprocess
from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: Font problems are warnings of this module's logger.
warn = logging.getLogger(__name__).warning

#: Environment variable with extra font files (tried before system fonts).
FONT_ENV = 'RSREFSEG_FONT'
#: System fonts tried after DejaVu Sans when present.
SYSTEM_FONTS = (
    '/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc',
    '/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf',
    '/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc',
    '/usr/share/fonts/truetype/wqy/wqy-microhei.ttc',
    '/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf',
    '/System/Library/Fonts/PingFang.ttc',
    'C:/Windows/Fonts/msyh.ttc',
    'C:/Windows/Fonts/arialuni.ttf',
)
TEXT_COLOR = (20, 20, 20)
BAND_COLOR = (255, 255, 255)
LABEL_BAND_COLOR = (235, 235, 235)


def dejavu_sans() -> str:
    """Path of DejaVu Sans as shipped inside matplotlib."""
    import matplotlib
    return osp.join(matplotlib.get_data_path(), 'fonts', 'ttf',
                    'DejaVuSans.ttf')


@lru_cache(maxsize=None)
def _cmap(path: str) -> frozenset:
    """Code points covered by a font file (first face of a collection)."""
    from fontTools.ttLib import TTFont
    try:
        font = TTFont(path, fontNumber=0, lazy=True)
        try:
            return frozenset(font.getBestCmap() or ())
        finally:
            font.close()
    except Exception as e:  # unreadable font file: skip it, loudly
        warn(f'captions: cannot read font {path} ({e}); skipped')
        return frozenset()


@lru_cache(maxsize=None)
def _fontconfig_font(code_point: int) -> Optional[str]:
    """A font file fontconfig lists for a code point, or None."""
    if shutil.which('fc-list') is None:
        return None
    try:
        out = subprocess.run(['fc-list', f':charset={code_point:x}', 'file'],
                             capture_output=True,
                             text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    files = sorted(line.strip().rstrip(':') for line in out.splitlines()
                   if line.strip())
    files = [f for f in files if f.lower().endswith(('.ttf', '.otf', '.ttc'))]
    return files[0] if files else None


def font_paths() -> List[str]:
    """Font files tried in order for each character."""
    extra = [p for p in os.environ.get(FONT_ENV, '').split(os.pathsep) if p]
    missing = [p for p in extra if not osp.isfile(p)]
    if missing:
        raise FileNotFoundError(f'{FONT_ENV} names font files that do not '
                                f'exist: {missing}')
    return [dejavu_sans()] + extra + [p for p in SYSTEM_FONTS if osp.isfile(p)]


_warned: set = set()


def font_for_char(ch: str, paths: Sequence[str]) -> Optional[str]:
    """The first font in ``paths`` (then fontconfig's) that has ``ch``.

    Args:
        ch (str): One character.
        paths (Sequence[str]): Candidate font files.

    Returns:
        str | None: A font path, or None when no installed font has it.
    """
    cp = ord(ch)
    for path in paths:
        if cp in _cmap(path):
            return path
    path = _fontconfig_font(cp)
    if path is not None and cp in _cmap(path):
        return path
    return None


def text_runs(text: str) -> List[Tuple[str, str]]:
    """Split ``text`` into ``(font path, substring)`` runs.

    Whitespace stays with the current run; characters no font covers use
    the primary font (drawn as a box) and are logged once.
    """
    paths = font_paths()
    runs: List[Tuple[str, str]] = []
    missing = []
    for ch in text:
        if ch.isspace() and runs:
            path = runs[-1][0]
        else:
            path = font_for_char(ch, paths)
            if path is None:
                if not ch.isspace() and ch not in _warned:
                    missing.append(ch)
                path = paths[0]
        if runs and runs[-1][0] == path:
            runs[-1] = (path, runs[-1][1] + ch)
        else:
            runs.append((path, ch))
    if missing:
        _warned.update(missing)
        names = ', '.join(f'{c!r} (U+{ord(c):04X})' for c in missing)
        warn(f'captions: no installed font has {names}; they are drawn as '
             'boxes. Install a Unicode font (e.g. Debian/Ubuntu '
             f'fonts-noto-cjk) or set {FONT_ENV}=/path/to/font.ttf')
    return runs


@lru_cache(maxsize=64)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def _text_width(runs: List[Tuple[str, str]], size: int) -> float:
    return sum(_font(p, size).getlength(s) for p, s in runs)


def wrap_text(text: str, size: int, max_width: int) -> List[str]:
    """Greedy word wrap to ``max_width`` pixels; over-long words (and
    scripts without spaces) are broken between characters."""
    lines: List[str] = []
    for para in text.split('\n'):
        line = ''
        for word in para.split():
            cand = word if not line else f'{line} {word}'
            if _text_width(text_runs(cand), size) <= max_width:
                line = cand
                continue
            if line:
                lines.append(line)
            line = ''
            for ch in word:  # break the word itself when it is too long
                if line and _text_width(text_runs(line + ch),
                                        size) > max_width:
                    lines.append(line)
                    line = ''
                line += ch
        lines.append(line)
    return lines or ['']


def caption_size(width: int) -> int:
    """Font size (px) readable on an image ``width`` pixels wide."""
    return int(np.clip(round(width / 28), 13, 40))


def text_band(text: str,
              width: int,
              size: Optional[int] = None,
              background: Tuple[int, int, int] = BAND_COLOR,
              color: Tuple[int, int, int] = TEXT_COLOR) -> np.ndarray:
    """Render wrapped ``text`` on a band ``width`` pixels wide.

    Args:
        text (str): Any Unicode text.
        width (int): Band width in pixels.
        size (int, optional): Font size; defaults to :func:`caption_size`.
        background (tuple): RGB background.
        color (tuple): RGB text colour.

    Returns:
        np.ndarray: (h, width, 3) uint8 RGB band.
    """
    size = size or caption_size(width)
    pad = max(3, size // 3)
    lines = wrap_text(text, size, max(width - 2 * pad, size))
    line_h = int(round(size * 1.25))
    band = Image.new('RGB', (width, line_h * len(lines) + 2 * pad), background)
    draw = ImageDraw.Draw(band)
    for i, line in enumerate(lines):
        x = float(pad)
        for path, run in text_runs(line):
            font = _font(path, size)
            draw.text((x, pad + i * line_h), run, font=font, fill=color)
            x += font.getlength(run)
    return np.asarray(band)


def add_caption(image: np.ndarray,
                text: str,
                size: Optional[int] = None) -> np.ndarray:
    """Put ``text`` in a white band above ``image``, wrapped to its width.

    Args:
        image (np.ndarray): (H, W, 3) uint8 image (RGB; a BGR image gets a
            BGR band, which is the same since the band is grey).
        text (str): The caption (e.g. the referring expression).
        size (int, optional): Font size in pixels.

    Returns:
        np.ndarray: (H + band, W, 3) uint8 image.
    """
    band = text_band(text, image.shape[1], size)
    return np.concatenate([band, image], axis=0)


def label_panel(image: np.ndarray,
                label: str,
                size: Optional[int] = None) -> np.ndarray:
    """Put a short label ("ground truth", "prediction") above a panel.

    Args:
        image (np.ndarray): (H, W, 3) uint8 panel.
        label (str): The label.
        size (int, optional): Font size; defaults to 90 % of the caption
            size for the panel width.

    Returns:
        np.ndarray: (H + band, W, 3) uint8 image.
    """
    size = size or max(12, int(caption_size(image.shape[1]) * 0.9))
    band = text_band(label, image.shape[1], size, LABEL_BAND_COLOR)
    return np.concatenate([band, image], axis=0)


def covered(text: str) -> Dict[str, Optional[str]]:
    """Font chosen per distinct non-space character (None = no font).

    Useful to check a deployment can draw the expressions it expects.
    """
    paths = font_paths()
    return {
        ch: font_for_char(ch, paths)
        for ch in sorted(set(text)) if not ch.isspace()
    }
