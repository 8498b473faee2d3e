"""Print the configuration reference (every key, type, default, description) as Markdown.

Usage: ``python scripts/config_reference.py > docs/config-reference.md`` (or paste into the
README's configuration section).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anprd.config import config_reference_markdown

__all__ = ["main"]


def main() -> int:
    sys.stdout.write(config_reference_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
