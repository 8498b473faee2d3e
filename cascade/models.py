"""Model folders: where one is looked for, and the error that names a missing or unusable one.

The detector and every cascade stage load their models through here, so a folder is found the same
way for all of them and no stage has to import the detector (which imports the cascade).
"""

from __future__ import annotations

import os
from pathlib import Path

from anprd.errors import AnprdError

__all__ = ["ModelError", "resolve_model_dir"]

_REPO = Path(__file__).resolve().parent.parent  # the repository root, or the installed data


class ModelError(AnprdError):
    """The model folder is missing or unusable; the message names the path."""


def resolve_model_dir(model: str, base_dir: Path | None = None, marker: str = "model.json") -> Path:
    """Find a model folder: absolute, relative to `base_dir` (the config's folder), to
    ``$ANPRD_DATA_DIR`` (set by the systemd units to the installed data), the current directory,
    or the anprd install (repository root or installed data). The folder must hold `marker`."""
    try:
        path = Path(model).expanduser()
    except RuntimeError as exc:  # ~name of a user this host does not have
        raise ModelError(f"model not found: {model} ({exc})") from None
    data_dir = os.environ.get("ANPRD_DATA_DIR")
    candidates = [path] if path.is_absolute() else [
        *([base_dir / path] if base_dir else []), *([Path(data_dir) / path] if data_dir else []),
        Path.cwd() / path, _REPO / path, _REPO / "anprd" / path]
    for candidate in candidates:
        if (candidate / marker).is_file():
            return candidate
    raise ModelError(f"model not found: {model} (looked for {marker} in "
                     f"{', '.join(str(c) for c in candidates)})")
