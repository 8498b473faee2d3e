"""Reading image files for the CLI, `anprd eval` and folder cameras.

Files are read as bytes and decoded in memory: `cv2.imread` takes a `str` path and crashes the
process on a file name that is not valid UTF-8 (Latin-1 names written by cameras), and it says
neither why a file could not be read nor that a JPEG was cut short (it may decode the top part and
fill the rest with grey).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from anprd.errors import AnprdError
from anprd.logs import stderr_set_aside

__all__ = ["IMAGE_SUFFIXES", "ImageReadError", "check_image", "read_image"]

IMAGE_KINDS = "JPEG, PNG, BMP, WebP or TIFF"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})  # those kinds' files
_JPEG_START, _JPEG_SCAN, _JPEG_END = b"\xff\xd8", b"\xff\xda", b"\xff\xd9"


class ImageReadError(AnprdError):
    """An image file that cannot be used; the one-line message names the file and the reason."""


def read_image(path: Path) -> np.ndarray:
    """The BGR uint8 image in `path`; raises `ImageReadError` naming the file otherwise."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageReadError(f"{path}: is a folder, expected an image file") from None
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if data.startswith(_JPEG_START):
        # Entropy-coded data never holds FF D9 (an FF there is followed by 00), so a JPEG with no
        # end-of-image marker after its first scan was cut short (a copy or a write unfinished).
        scan = data.find(_JPEG_SCAN)
        if scan < 0 or data.find(_JPEG_END, scan) < 0:
            raise ImageReadError(f"{path}: truncated JPEG (no end-of-image marker)")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    except cv2.error:  # a header that claims more pixels than OpenCV's decoder limit (2^30)
        raise ImageReadError(f"{path}: not a readable image (its header claims more pixels than "
                             "OpenCV decodes)") from None
    if image is None:
        raise ImageReadError(f"{path}: not a readable image ({IMAGE_KINDS})")
    return image


# What the decoders print (to the process's stderr, not as errors) for data they could not decode
# and filled with grey; their other messages, such as libpng's notes on colour profiles, are benign.
# ("Corrupt JPEG data: N extraneous bytes before marker" is common in camera files that decode whole.)
_CORRUPT_DATA_MESSAGES = ("premature end of data segment", "Premature end of JPEG file", "bad Huffman code",
                          "libpng error", "Unexpected end of input stream", "TIFF_Error")


def check_image(path: Path) -> None:
    """Fail as `read_image` does, and also on corrupt data the decoders only complain about: libjpeg
    decodes a JPEG with a damaged middle, or a header claiming far more pixels than its data holds,
    as grey, and says so on stderr. The decoders' messages are kept off the terminal (an error is
    one line) and the first complaint becomes the error. stderr is set aside while decoding, so call
    this where no other thread writes to it (the CLI checks its inputs before loading the model)."""
    with stderr_set_aside() as said:
        read_image(path)
    complaints = [line.strip() for line in said.decode(errors="replace").splitlines()
                  if any(message in line for message in _CORRUPT_DATA_MESSAGES)]
    complaint = complaints[0] if complaints else None
    if complaint is not None:
        raise ImageReadError(f"{path}: corrupt image data (the decoder said: {complaint[:120]})")
