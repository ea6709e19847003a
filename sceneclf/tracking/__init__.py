"""The tracking stage, the only place MLflow is used: the `Tracker` a search calls (tracker),
stores and their set-up (stores), models logged, registered and loaded by URI (models), and
the MLflow UI (ui)."""
