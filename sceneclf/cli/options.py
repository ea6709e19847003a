"""Option groups and parameters shared by several commands."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import click

from sceneclf.data.manifest import LAYOUTS

TRACKING_HELP = "MLflow tracking URI [env MLFLOW_TRACKING_URI; default sqlite:///mlruns/mlflow.db]."
STORAGE_HELP = ("Optuna storage: an RDB URL (sqlite:///..., postgresql://...) or a journal file "
                "path [env SCENECLF_STORAGE; default sqlite:///studies/sceneclf.db].")

device_option = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                             show_default=True)


def parse_widths(ctx, param, value: str | None):
    if value is None:
        return None
    try:
        widths = tuple(int(w) for w in value.split(","))
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a comma-separated list of integers") from None
    if not widths or min(widths) < 1:
        raise click.BadParameter(f"'{value}': widths must be positive integers")
    return widths


class AutoOrCount(click.ParamType):
    """`auto` or a whole number of processes from 1 to `most`."""

    name = "auto|N"

    def __init__(self, most: int | None = None):
        self.most = most

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        if str(value).strip().lower() == "auto":
            return "auto"
        try:
            n = int(value)
        except ValueError:
            self.fail(f"{value!r} is neither 'auto' nor a whole number", param, ctx)
        if n < 1 or (self.most is not None and n > self.most):
            self.fail(f"{n} is not in the range 1 to {self.most or 'any'}", param, ctx)
        return n


def data_options(f):
    """--data, --layout, --fold, --skip-bad, --cache-dir, --prep-workers (passed on in the
    environment, as SCENECLF_PREP_WORKERS)."""
    @click.option("--data", type=click.Path(exists=True, path_type=Path), default=None,
                  help="Data set folder or CSV manifest (default: the embedded synthetic data set).")
    @click.option("--layout", type=click.Choice(LAYOUTS),
                  default=None, help="Force a layout instead of detecting it.")
    @click.option("--fold", type=click.IntRange(1, 10), default=1, show_default=True,
                  help="Official fold, where the layout has folds.")
    @click.option("--skip-bad", is_flag=True, help="Drop unreadable audio files with a warning.")
    @click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
                  envvar="SCENECLF_CACHE", help="Cache folder [env SCENECLF_CACHE; default ~/.cache/sceneclf].")
    @click.option("--prep-workers", type=AutoOrCount(), default="auto", envvar="SCENECLF_PREP_WORKERS",
                  help="Processes that decode audio and compute mels for clips not cached yet; auto: "
                       "the cores, fewer for a few clips [env SCENECLF_PREP_WORKERS; default: auto].")
    @functools.wraps(f)
    def wrapper(*args, prep_workers, **kwargs):
        os.environ["SCENECLF_PREP_WORKERS"] = str(prep_workers)  # read by prepare(), here and in --jobs workers
        return f(*args, **kwargs)
    return wrapper


def study_options(f):
    """--study, --storage, --tracking-uri."""
    @click.option("--study", default="sceneclf", show_default=True, help="Optuna study name.")
    @click.option("--storage", default=None, envvar="SCENECLF_STORAGE",
                  help=STORAGE_HELP)
    @click.option("--tracking-uri", default=None, help=TRACKING_HELP)
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)
    return wrapper


def augment_options(f):
    """--mixstyle-p, --mixup-alpha, --freq-masks, --time-masks, --time-shift, --response-p, passed
    on as one `augment` AugmentConfig."""
    @click.option("--mixstyle-p", type=click.FloatRange(0, 1), default=0.0, show_default=True,
                  help="Freq-MixStyle: probability per batch of mixing clips' band statistics.")
    @click.option("--mixup-alpha", type=click.FloatRange(0), default=0.0, show_default=True,
                  help="mixup: Beta(alpha, alpha) weights of mixed clips and labels (0: off).")
    @click.option("--freq-masks", type=click.IntRange(0), default=0, show_default=True,
                  help="SpecAugment: frequency masks per clip.")
    @click.option("--time-masks", type=click.IntRange(0), default=0, show_default=True,
                  help="SpecAugment: time masks per clip.")
    @click.option("--time-shift", type=click.IntRange(0), default=0, show_default=True,
                  help="Largest circular time shift, in frames.")
    @click.option("--response-p", type=click.FloatRange(0, 1), default=0.0, show_default=True,
                  help="Device response: probability per clip of a random frequency response.")
    @functools.wraps(f)
    def wrapper(*args, mixstyle_p, mixup_alpha, freq_masks, time_masks, time_shift, response_p, **kwargs):
        from sceneclf.model.augment import AugmentConfig

        augment = AugmentConfig(mixstyle_p=mixstyle_p, mixup_alpha=mixup_alpha, freq_masks=freq_masks,
                                time_masks=time_masks, time_shift=time_shift, response_p=response_p)
        return f(*args, augment=augment, **kwargs)
    return wrapper
