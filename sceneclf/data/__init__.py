"""The data stage: layouts on disk -> `Manifest` (manifest, layouts); decoding and resampling
(audio); the mel cache and `PreparedData` (prepare); `MelSet` and batches (melset); the
synthetic default data set (synth, sounds). No torch.nn, no Optuna, no MLflow."""
