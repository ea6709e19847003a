"""sceneclf: the best small acoustic scene classifier that fits a parameter budget."""

__version__ = "0.1.0"
