"""The search stage, the only place Optuna is used: the space file (`space`), the objective,
the study and its stored record, storages, samplers and pruners, recovery after a crash.
The names below are what the CLI offers; light to import."""

DEFAULT_STORAGE = "sqlite:///studies/sceneclf.db"
SAMPLERS = ("tpe", "random", "gp", "cmaes")
PRUNERS = ("median", "percentile", "asha", "hyperband", "none")
DEFAULT_PRUNER = "percentile"  # chosen by bench quality and pruning (bench/RESULTS.md)
OBJECTIVES = ("accuracy", "accuracy,kb", "accuracy,macs")  # --objectives: one study, or a front
