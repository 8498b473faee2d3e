"""Free plate-like fonts that `make setup` installs from Debian packages.

No genuine UK (Charles Wright) or German (FE-Schrift) plate font is packaged anywhere we can install
from, so training spreads over condensed bold sans fonts that look like them, plus a few wider and
monospaced faces so the reader does not learn one typeface's quirks.
"""

from __future__ import annotations

from pathlib import Path

from anprd.errors import AnprdError

__all__ = ["FONT_FILES", "FontMissingError", "available_fonts"]

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
