"""The sceneclf benchmark suite (see README.md). `sceneclf` is imported before anything loads
torch, as the CLI does, so that its OpenMP setting (OMP_WAIT_POLICY, 030e353) holds here too."""

import sceneclf  # noqa: F401
