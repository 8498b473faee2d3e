"""Free plate-like fonts that `make setup` installs from Debian packages.

No genuine UK (Charles Wright) or German (FE-Schrift) plate font is packaged anywhere we can install
from, so training spreads over condensed bold sans fonts that look like them, plus a few wider and
monospaced faces so the reader does not learn one typeface's quirks.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

from anprd.errors import AnprdError

__all__ = ["FONT_FILES", "FontMissingError", "available_fonts", "plate_font_dir", "plate_fonts_by_family",
           "unseen_fonts"]

FONT_ROOT = Path("/usr/share/fonts")

# (path under /usr/share/fonts, Debian package that ships it)
FONT_FILES: tuple[tuple[str, str], ...] = (
    ("truetype/opendin/OSP-DIN.ttf", "fonts-opendin"),
    ("opentype/bebas-neue/BebasNeue-Bold.otf", "fonts-bebas-neue"),
    ("truetype/roboto/unhinted/RobotoCondensed-Bold.ttf", "fonts-roboto-unhinted"),
    ("truetype/liberation/LiberationSansNarrow-Bold.ttf", "fonts-liberation"),
    ("opentype/urw-base35/NimbusSansNarrow-Bold.otf", "fonts-urw-base35"),
    ("truetype/dejavu/DejaVuSansCondensed-Bold.ttf", "fonts-dejavu-extra"),
    ("truetype/open-sans/OpenSans-CondBold.ttf", "fonts-open-sans"),
    ("truetype/clear-sans/ClearSans-Bold.ttf", "fonts-clear-sans"),
    ("opentype/b612/B612-Bold.otf", "fonts-b612"),
    ("truetype/croscore/Arimo-Bold.ttf", "fonts-croscore"),
    ("truetype/dejavu/DejaVuSansMono-Bold.ttf", "fonts-dejavu-core"),
    ("opentype/league-spartan/LeagueSpartan-Bold.otf", "fonts-league-spartan"),
    ("opentype/allerta/allerta_medium.otf", "fonts-allerta"),
    ("truetype/freefont/FreeSansBold.ttf", "fonts-freefont-ttf"),
    ("truetype/jetbrains-mono/JetBrainsMono-Bold.ttf", "fonts-jetbrains-mono"),
    ("truetype/roboto/unhinted/RobotoCondensed-Regular.ttf", "fonts-roboto-unhinted"),
)


# Installed by the same packages but never used in training: plates drawn in these are lettering the
# reader has not seen, as every real plate font is (the confidence calibration is fitted on them)
UNSEEN_FONT_FILES: tuple[str, ...] = (
    "opentype/urw-base35/NimbusSans-Bold.otf",
    "truetype/liberation/LiberationSans-Bold.ttf",
    "truetype/open-sans/OpenSans-Bold.ttf",
    "truetype/roboto/unhinted/RobotoTTF/Roboto-Bold.ttf",
    "truetype/dejavu/DejaVuSans-Bold.ttf",
    "truetype/croscore/Cousine-Bold.ttf",
    "opentype/league-spartan/LeagueSpartan-SemiBold.otf",
    "truetype/clear-sans/ClearSans-Medium.ttf",
)


def unseen_fonts() -> list[Path]:
    """The installed `UNSEEN_FONT_FILES`; raises if none is there."""
    found = [FONT_ROOT / rel for rel in UNSEEN_FONT_FILES if (FONT_ROOT / rel).is_file()]
    if not found:
        raise FontMissingError(f"none of the held-out fonts is under {FONT_ROOT}; run `make setup`")
    return found


class FontMissingError(AnprdError):
    pass


def available_fonts(minimum: int = 12) -> list[Path]:
    """Paths of the installed plate fonts; raises naming the missing packages if fewer than `minimum`."""
    found = [FONT_ROOT / rel for rel, _ in FONT_FILES if (FONT_ROOT / rel).is_file()]
    if len(found) < minimum:
        missing = sorted({pkg for rel, pkg in FONT_FILES if not (FONT_ROOT / rel).is_file()})
        raise FontMissingError(
            f"only {len(found)} plate fonts under {FONT_ROOT}; run `make setup` "
            f"(installs Debian packages: {' '.join(missing)})"
        )
    return found


PLATE_FONT_COUNT, PLATE_FONT_SEED = 36, 5  # the plate lettering the shipped model was trained on


def plate_font_dir() -> Path:
    """Where the generated plate fonts are cached (they are data, rebuilt from their seed)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "anprd" / f"plate-fonts-{PLATE_FONT_SEED}-{PLATE_FONT_COUNT}"


@lru_cache(maxsize=1)
def plate_fonts_by_family() -> dict[str, list[Path]]:
    """The procedural plate fonts (`train.plate_fonts`) by glyph family, built on first use."""
    from train.plate_fonts import build_plate_fonts

    folder = plate_font_dir()
    build_plate_fonts(folder, PLATE_FONT_COUNT, PLATE_FONT_SEED)
    manifest = json.loads((folder / "manifest.json").read_text())
    families: dict[str, list[Path]] = {}
    for entry in manifest["fonts"]:
        families.setdefault(entry["family"], []).append(folder / entry["file"])
    return families
