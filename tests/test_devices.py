"""Recording devices read from file names, and accuracy on heard and unheard devices."""

import pytest
import torch

from sceneclf.data.devices import device_accuracy, device_of


def test_device_of_reads_dcase_and_synthetic_names_only():
    assert device_of("audio/airport-lisbon-1000-40000-a.wav") == "a"
    assert device_of("audio/street_traffic-paris-27-800-s4.wav") == "s4"
    assert device_of("audio/city_center_cc003_02_s10.wav") == "s10"
    assert device_of("audio/1-100032-A-0.wav") is None  # ESC-50: the last part is a take
    assert device_of("audio/fold1/100032-3-0-0.wav") is None  # UrbanSound8K
    assert device_of("b020_90_100.wav") is None


def test_accuracy_by_device_against_a_hand_count():
    paths = ["x_a.wav", "x_a.wav", "x_s1.wav", "x_s1.wav", "x_s1.wav", "x_b.wav"]
    correct = [True, False, True, True, False, True]
    acc = device_accuracy(paths, correct, ["t_a.wav", "t_b.wav"])
    assert acc.counts == {"a": (1, 2), "b": (1, 1), "s1": (2, 3)}  # a, b, c before s1, s2
    assert acc.heard == {"a", "b"} and acc.unheard == ("s1",)
    assert acc.heard_accuracy == 2 / 3 and acc.unheard_accuracy == 2 / 3
    assert acc.metrics("test_") == {"test_accuracy_device_a": 0.5, "test_accuracy_device_b": 1.0,
                                    "test_accuracy_device_s1": 2 / 3, "test_accuracy_heard_devices": 2 / 3,
                                    "test_accuracy_unheard_devices": 2 / 3}
    assert device_accuracy(paths, correct, ["t_a.wav", "t.wav"]) is None  # one training name without a device
    assert device_accuracy(["x.wav"], [True], ["t_a.wav"]) is None
    with pytest.raises(ValueError):
        device_accuracy(paths, correct[:-1], ["t_a.wav"])


def test_retrain_best_reports_heard_and_unheard_devices(retrained_study):
    """retrain-best fits train and val, so only test devices neither lists are unheard."""
    metrics = torch.load(retrained_study["checkpoint"], weights_only=True)["metrics"]
    setup = retrained_study["data"] / "evaluation_setup"
    tested = [device_of(f) for f in (setup / "fold1_evaluate.txt").read_text().split()[::2]]
    fitted = {device_of(f) for name in ("train", "validate") for f in (setup / f"fold1_{name}.txt").read_text().split()[::2]}
    per_device = {k.rsplit("_", 1)[-1] for k in metrics if k.startswith("test_accuracy_device_")}
    assert per_device == set(tested) and len(per_device) > 3
    unheard = [d for d in tested if d not in fitted]
    assert fitted - {"a", "b", "c"} and unheard  # val heard some s-devices; test still has others
    expected = sum(metrics[f"test_accuracy_device_{d}"] for d in unheard) / len(unheard)  # mean over clips
    assert metrics["test_accuracy_unheard_devices"] == pytest.approx(expected)
    assert "unheard devices" in retrained_study["retrain_output"]


def test_every_finished_trial_logs_validation_accuracy_by_device(retrained_study):
    """The default data's validation hears devices training does not: each trial's run says how
    its best state did on them, and the devices' clip-weighted mean is the trial's accuracy."""
    from collections import Counter

    import mlflow

    client = mlflow.MlflowClient(retrained_study["tracking"])
    runs = client.search_runs([client.get_experiment_by_name(retrained_study["study"]).experiment_id],
                              "tags.`sceneclf.role` = 'trial' and attributes.status = 'FINISHED'")
    setup = retrained_study["data"] / "evaluation_setup"
    clips = Counter(device_of(f) for f in (setup / "fold1_validate.txt").read_text().split()[::2])
    heard = {device_of(f) for f in (setup / "fold1_train.txt").read_text().split()[::2]}
    assert runs and set(clips) - heard
    for run in runs:
        m = run.data.metrics
        assert {k.rsplit("_", 1)[-1] for k in m if k.startswith("final_val_accuracy_device_")} == set(clips)
        weighted = sum(m[f"final_val_accuracy_device_{d}"] * n for d, n in clips.items()) / sum(clips.values())
        assert weighted == pytest.approx(m["final_val_accuracy"])
        assert 0 <= m["final_val_accuracy_unheard_devices"] <= 1


def test_retrain_best_keeps_a_moving_average_of_its_weights(retrained_study):
    """Trials train raw weights (the tiny space sets no ema_epochs); retrain-best, with no
    validation data to choose a state by, keeps its moving average's last state."""
    saved = torch.load(retrained_study["checkpoint"], weights_only=True)
    assert saved["train"]["ema_epochs"] == 2.0
