"""The data stage: layouts on disk -> `Manifest` (manifest, layouts); decoding and resampling
(audio); decoding and mel computation in worker processes (pool); the one mel store per data set
(store) and `PreparedData` (prepare); `MelSet` and batches (melset); the
synthetic default data set (synth, sounds). No torch.nn, no Optuna, no MLflow."""
