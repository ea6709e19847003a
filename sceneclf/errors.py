"""User-facing errors: one line, naming the file or option and the reason."""


class SceneclfError(Exception):
    """An error the CLI reports as one line (exit code 2), never as a traceback."""


class DataError(SceneclfError):
    """A data set, manifest or audio file that cannot be used."""


class BudgetError(SceneclfError):
    """A model configuration over the parameter or MAC budget."""


class ConfigError(SceneclfError):
    """An invalid option, search-space file or checkpoint configuration."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (at most `limit` characters), or its type's name
    when it has none: the reason part of a one-line error."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
