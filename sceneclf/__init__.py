"""sceneclf: the best small acoustic scene classifier that fits a parameter budget."""

import os

# OpenMP threads that spin while waiting starve each other as soon as anything else runs on the
# machine (other workers, a browser, a test): measured here under load 6 on 2 cores, one epoch of
# the default CNN took 9.0 s with the default policy and 1.8 s with PASSIVE (bench/RESULTS.md).
# Set before torch loads its OpenMP runtime; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
