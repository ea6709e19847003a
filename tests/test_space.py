import optuna
import pytest

from sceneclf.errors import ConfigError
from sceneclf.model.augment import AugmentConfig
from sceneclf.model.budget import count_params
from sceneclf.search.space import load_space, packaged_spaces, parse_space, sample

FIXED = {"lr": 1e-3, "weight_decay": 1e-4, "batch_size": 32, "noise": 0.1, "dropout": 0.2,
         "kernel_size": 5, "n_blocks": 3, "base_width": 16, "growth": 1.5, "mixstyle_p": 0.7, "mixstyle_alpha": 0.25,
         "mixup_alpha": 0.2, "freq_masks": 1, "time_masks": 2, "time_shift": 20, "response_p": 0.4, "response_db": 8.0}


def test_packaged_spaces_load_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no search/ folder here: the packaged copy is used
    assert {"default", "augmented", "dcase-low-complexity"} <= set(packaged_spaces())
    default = load_space("search/default.toml")
    assert {"lr", "base_width", "growth", "n_blocks", "noise", "batch_size", "dropout",
            "weight_decay", "mixstyle_p", "mixstyle_alpha", "time_shift"} <= set(default.params)
    assert default.params["lr"].log
    augmented = load_space("augmented")
    assert set(augmented.params) - set(default.params) == {"mixup_alpha", "freq_masks", "time_masks",
                                                           "response_p", "response_db"}
    dcase = load_space("dcase-low-complexity")
    assert (dcase.budget.max_kb, dcase.budget.precision, dcase.budget.max_macs_per_second) == (128, "int8", 30_000_000)
    assert dcase.budget.max_macs is None  # the rule counts per second of audio, not per clip


def test_fixed_trial_turns_into_configs():
    cfgs = sample(optuna.trial.FixedTrial(FIXED), load_space("augmented"), n_classes=15, seed=7)
    assert cfgs.model.widths == (16, 24, 36)
    assert cfgs.model.kernel_size == 5 and cfgs.model.dropout == 0.2
    assert cfgs.features.noise == 0.1
    assert (cfgs.train.lr, cfgs.train.batch_size, cfgs.train.seed) == (1e-3, 32, 7)
    assert cfgs.train.epochs == 24 and cfgs.train.early_stop == 6  # from the space's [train]
    assert (cfgs.augment.mixstyle_p, cfgs.augment.mixup_alpha) == (0.7, 0.2)
    assert (cfgs.augment.freq_masks, cfgs.augment.time_masks, cfgs.augment.time_shift) == (1, 2, 20)
    assert cfgs.augment.mixstyle_alpha == 0.25
    assert (cfgs.augment.response_p, cfgs.augment.response_db) == (0.4, 8.0)
    assert cfgs.augment.freq_width == AugmentConfig().freq_width  # not tuned: the default
    assert cfgs.flat()["augment.time_shift"] == 20
    assert cfgs.flat()["widths"] == "16,24,36"
    assert count_params(cfgs.model) > 0


def test_per_block_widths():
    space = parse_space("""
[params.n_blocks]
type = "int"
low = 2
high = 2
[params.width_1]
type = "categorical"
choices = [8]
[params.width_2]
type = "int"
low = 12
high = 40
step = 4
""")
    cfgs = sample(optuna.trial.FixedTrial({"n_blocks": 2, "width_1": 8, "width_2": 20}), space, 4)
    assert cfgs.model.widths == (8, 20)


@pytest.mark.parametrize("text,key", [
    ("[params.lr\ntype=", "not valid TOML"),
    ('[params.learning_rate]\ntype = "float"\nlow = 1\nhigh = 2', "params.learning_rate: unknown parameter"),
    ('[params.lr]\ntype = "floaty"\nlow = 1\nhigh = 2', "params.lr: needs type"),
    ('[params.lr]\ntype = "float"\nlow = 2\nhigh = 1', "params.lr: low 2.0 must not exceed high"),
    ('[params.lr]\ntype = "float"\nlow = 0\nhigh = 1\nlog = true', "params.lr: log scale needs low > 0"),
    ('[params.lr]\ntype = "float"\nlow = 0.1\nhigh = 1\nstpe = 3', "params.lr: unknown key stpe"),
    ('[params.batch_size]\ntype = "categorical"\nchoices = []', "params.batch_size: choices"),
    ('[params.base_width]\ntype = "int"\nlow = 4\nhigh = 8\n[trian]\nepochs = 3', "unknown table [trian]"),
    ('[params.base_width]\ntype = "int"\nlow = 4\nhigh = 8\n[train]\nepoch = 3', "unknown key train.epoch"),
    ('[params.base_width]\ntype = "int"\nlow = 4\nhigh = 8\n[budget]\nmax_param = 3', "unknown key budget.max_param"),
    ('[params.lr]\ntype = "float"\nlow = 0.1\nhigh = 1', "base_width"),
    ("", "no [params.*] tables"),
])
def test_malformed_space_names_the_key(text, key):
    with pytest.raises(ConfigError) as err:
        parse_space(text, "bad.toml")
    assert key in str(err.value) and str(err.value).startswith("bad.toml")
    assert "\n" not in str(err.value)


def test_missing_space_file():
    with pytest.raises(ConfigError, match="--space nope.toml: no such file"):
        load_space("nope.toml")


def test_a_space_sets_the_weight_average_span():
    space = parse_space('[params.base_width]\ntype = "int"\nlow = 4\nhigh = 8\n[train]\nema_epochs = 1.5', "ema.toml")
    assert sample(optuna.trial.FixedTrial({"base_width": 4}), space, n_classes=15).train.ema_epochs == 1.5
    assert sample(optuna.trial.FixedTrial(FIXED), load_space("default"), n_classes=15).train.ema_epochs == 0.0
