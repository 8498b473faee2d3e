"""The base class of the errors a user can fix."""

from __future__ import annotations

__all__ = ["AnprdError"]


class AnprdError(Exception):
    """Bad input or surroundings the user can fix (a file, a config key, a value, a camera, a port).

    Its message is one line that names the file, key or value. `anprd` commands print it without
    a traceback and exit 2; so does `anprd run` while it starts. Any other exception is a bug.
    """
