"""anprd: real-time automatic number plate recognition daemon."""

__version__ = "0.1.0"
