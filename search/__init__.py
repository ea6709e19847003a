"""The search-space files, installed as the package `sceneclf.spaces` (see pyproject.toml)."""
