"""User-facing errors: one line, naming the file or option and the reason."""


class SceneclfError(Exception):
    """An error the CLI reports as one line (exit code 2), never as a traceback."""


class DataError(SceneclfError):
    """A data set, manifest or audio file that cannot be used."""


class BudgetError(SceneclfError):
    """A model configuration over the parameter or MAC budget."""


class ConfigError(SceneclfError):
    """An invalid option, search-space file or checkpoint configuration."""
