"""How library functions report progress: `click.echo` at the CLI, anything else in a library."""

from collections.abc import Callable

Echo = Callable[[str], None]
