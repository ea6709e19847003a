"""Where local stores live: the file behind a `sqlite:///` URL."""

from __future__ import annotations

from pathlib import Path

SQLITE = "sqlite:///"


def sqlite_path(url: str) -> Path | None:
    """The database file of a `sqlite:///PATH` URL; None for any other URL."""
    return Path(url[len(SQLITE):]) if url.startswith(SQLITE) else None
