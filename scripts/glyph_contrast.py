"""How far apart look-alike glyphs are in each plate font, at the size of a small plate's characters.

    python scripts/glyph_contrast.py --height 14

Each pair is drawn in the font, both glyphs scaled together so that the taller is `--height`
pixels, centred on each other, lightly blurred as a camera would (Gaussian sigma 0.5 px), and
compared: the sum of absolute differences over the larger glyph's ink. 0 means the font draws the
two alike (the generator then labels the letter as the digit: `train.gen.identical_glyphs`); pairs
of distinct shapes, such as 8 and B, sit around 0.15-0.5 at 14 px. A reader that tells O from 0 in
a font whose figure is near O/D's has to do it from a few pixels, which blur, noise and JPEG take
away first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from train.fonts import FontMissingError, available_fonts

__all__ = ["glyph_contrast", "main"]

PAIRS = ("O0", "OD", "0D", "8B", "5S")
RENDER_SIZE = 96  # points; large enough that the scaling, not the rasteriser, sets the detail


def _ink(font: ImageFont.FreeTypeFont, char: str) -> np.ndarray:
    canvas = Image.new("L", (2 * RENDER_SIZE, 2 * RENDER_SIZE))
    ImageDraw.Draw(canvas).text((RENDER_SIZE // 2, RENDER_SIZE // 4), char, font=font, fill=255)
    return np.asarray(canvas, np.float32)


def glyph_contrast(font_path: Path, pair: str, height: int) -> float:
    """|a - b| / ink of the two characters of `pair`, scaled together so that the taller is `height`
    px, each centred on the other (side bearings do not show on a plate)."""
    font = ImageFont.truetype(str(font_path), RENDER_SIZE)
    boxes = []
    for ink in (inks := [_ink(font, char) for char in pair]):
        ys, xs = np.nonzero(ink > 40)
        boxes.append((ys.min(), ys.max() + 1, xs.min(), xs.max() + 1))
    scale = height / max(y1 - y0 for y0, y1, _, _ in boxes)
    small = []
    for ink, (y0, y1, x0, x1) in zip(inks, boxes, strict=True):
        size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
        small.append(cv2.resize(ink[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA))
    frame = (height + 4, max(g.shape[1] for g in small) + 4)
    centred = []
    for glyph in small:
        canvas = np.zeros(frame, np.float32)
        top, left = (frame[0] - glyph.shape[0]) // 2, (frame[1] - glyph.shape[1]) // 2
        canvas[top:top + glyph.shape[0], left:left + glyph.shape[1]] = glyph
        centred.append(cv2.GaussianBlur(canvas, (0, 0), 0.5))
    return float(np.abs(centred[0] - centred[1]).sum() / max(centred[0].sum(), centred[1].sum()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/glyph_contrast.py",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--height", type=int, default=14, help="glyph height in pixels (default 14)")
    args = parser.parse_args(argv)
    if args.height < 4:
        print(f"glyph_contrast: --height {args.height} is too small (at least 4 px)", file=sys.stderr)
        return 2
    try:
        fonts = available_fonts()
    except FontMissingError as exc:
        print(f"glyph_contrast: {exc}", file=sys.stderr)
        return 2
    print(f"{'font':32s} " + " ".join(f"{pair[0] + '/' + pair[1]:>6s}" for pair in PAIRS))
    for font in fonts:
        figures = (glyph_contrast(font, pair, args.height) for pair in PAIRS)
        print(f"{font.name:32s} " + " ".join(f"{figure:6.2f}" for figure in figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
