"""The package version, in a leaf module so that every part (the CLI too) can read it."""

__version__ = "0.1.0"
