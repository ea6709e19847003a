"""sceneclf: the best small acoustic scene classifier that fits a parameter budget."""

from sceneclf import runtime

# Both before torch loads (OpenMP reads its policy once; the allocator thresholds should be in
# place before the first tensor); see sceneclf/runtime.py for what each buys.
runtime.prefer_passive_openmp()
runtime.keep_freed_memory()

__version__ = "0.1.0"
