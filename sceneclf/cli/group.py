"""The `sceneclf` click group: library errors (SceneclfError) become one-line messages with exit
code 2, never tracebacks; process-wide defaults are set here, at the edge."""

from __future__ import annotations

import os
import warnings

import click

from sceneclf.errors import SceneclfError


class CliError(click.ClickException):
    exit_code = 2


class Group(click.Group):
    """Turns library errors into one-line CLI errors."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SceneclfError as exc:
            raise CliError(str(exc)) from None


def set_process_defaults() -> None:
    """Defaults for this process and the workers it starts; a value the user set is kept."""
    # Spinning OpenMP threads starve each other under any other load (bench compute).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Optuna marks heartbeats, grouped TPE and stale-trial retry as experimental; we use them on purpose.
    warnings.filterwarnings("ignore", message=".*(experimental|ExperimentalWarning).*")


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sceneclf")
def cli() -> None:
    """Find the best small CNN for acoustic scene classification under a parameter budget."""
    set_process_defaults()
