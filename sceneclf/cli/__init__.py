"""The `sceneclf` command line: parse options, call one library function, print."""

from sceneclf.cli import export, results, search, train  # noqa: F401  (each registers its commands)
from sceneclf.cli.group import cli

__all__ = ["cli"]
