"""The `sceneclf` command line: parse options, call one library function, print."""

from sceneclf.cli import export, results, search, train  # noqa: F401  (each registers its commands)
from sceneclf.cli.group import cli

__all__ = ["cli", "main"]


def main() -> None:
    """The console script and `python -m sceneclf`: the command has this process to itself,
    so `search` may fork its `--jobs` workers (`sceneclf.cli.zygote`)."""
    cli(obj={"own_process": True})
