"""`sceneclf synth`, `train` and `retrain-best`: data and single models."""

from __future__ import annotations

from pathlib import Path

import click

from sceneclf.cli.group import CliError, cli
from sceneclf.cli.options import augment_options, data_options, device_option, parse_widths, study_options
from sceneclf.model import KERNEL_SIZES


@cli.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--clips-per-class", type=click.IntRange(2, 10000), default=None,
              help="Clips per class, at least one per recording location  [default: the embedded set's]")
@click.option("--seed", type=int, default=0, show_default=True)
def synth(out_dir: Path, clips_per_class: int | None, seed: int) -> None:
    """Write the procedural synthetic scene data set (TUT 2017 layout) to OUT_DIR.

    Example: sceneclf synth data/synth --clips-per-class 100 --seed 0
    """
    from sceneclf.data.synth import SynthConfig, write_dataset

    if out_dir.exists() and any(out_dir.iterdir()):
        raise CliError(f"{out_dir}: folder exists and is not empty")
    cfg = SynthConfig() if clips_per_class is None else SynthConfig(clips_per_class=clips_per_class)
    path = write_dataset(out_dir, cfg, seed=seed)
    click.echo(f"wrote {cfg.clips_per_class * 15} clips to {path}")


@cli.command()
@data_options
@click.option("--lr", type=click.FloatRange(0, 10, min_open=True), default=3e-3, show_default=True)
@click.option("--widths", callback=parse_widths, default="16,32,64", show_default=True,
              help="Channel width of each conv block.")
@click.option("--kernel-size", type=click.Choice([str(k) for k in KERNEL_SIZES]), default="3", show_default=True)
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True)
@click.option("--noise", type=click.FloatRange(0, 10), default=0.05, show_default=True,
              help="Training noise: at most this noise-to-signal RMS ratio.")
@click.option("--epochs", type=click.IntRange(1), default=20, show_default=True)
@click.option("--batch-size", type=click.IntRange(1, 4096), default=32, show_default=True)
@click.option("--weight-decay", type=click.FloatRange(0), default=1e-4, show_default=True)
@click.option("--max-params", type=click.IntRange(1), default=128_000, show_default=True)
@augment_options
@click.option("--seed", type=int, default=0, show_default=True)
@device_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("model.pt"),
              show_default=True, help="Checkpoint file for the best epoch.")
def train(data, layout, fold, skip_bad, cache_dir, lr, widths, kernel_size, dropout, noise, epochs,
          batch_size, weight_decay, max_params, augment, seed, device, out) -> None:
    """Train one CNN and keep its best checkpoint.

    Example: sceneclf train --widths 16,32,64 --lr 3e-3 --epochs 40 --mixstyle-p 0.5 --out model.pt
    """
    from sceneclf.cli import actions

    run = actions.TrainRequest(
        data=actions.data_config(data, layout, fold), cache_dir=cache_dir, skip_bad=skip_bad,
        lr=lr, widths=widths, kernel_size=int(kernel_size), dropout=dropout, noise=noise,
        epochs=epochs, batch_size=batch_size, weight_decay=weight_decay, max_params=max_params,
        seed=seed, device=device, out=out, augment=augment)
    actions.train_command(run, echo=click.echo)


@cli.command("retrain-best")
@study_options
@data_options
@click.option("--epochs", type=click.IntRange(1), default=None,
              help="Train exactly this many epochs [default: the trial's best epoch count or more, "
                   "until the training loss reaches the trial's then; at most 3x the trial's epochs].")
@click.option("--trial", "trial_number", type=click.IntRange(0), default=None,
              help="Retrain this trial instead of the best one.")
@click.option("--max-kb", type=click.FloatRange(0, min_open=True), default=None,
              help="Retrain the most accurate trial within this many kB of parameters (at the study's precision).")
@click.option("--seed", type=int, default=0, show_default=True)
@device_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("model.pt"),
              show_default=True, help="Checkpoint file of the final model.")
def retrain_best(study, storage, tracking_uri, data, layout, fold, skip_bad, cache_dir, epochs, trial_number,
                 max_kb, seed, device, out) -> None:
    """Retrain the best trial (or --trial N, or the best within --max-kb) on train + validation
    data, test it, register it in MLflow.

    Example: sceneclf retrain-best --study sceneclf --max-kb 64 --out model.pt

    In a multi-objective study (search --objectives accuracy,kb) --max-kb picks the most accurate
    point of the Pareto front within that size, and the default is the front's most accurate.
    """
    from sceneclf.cli import actions

    req = actions.RetrainRequest(
        study=study, storage=storage, tracking_uri=tracking_uri,
        data=actions.data_config(data, layout, fold) if data is not None else None,
        cache_dir=cache_dir, skip_bad=skip_bad, epochs=epochs, seed=seed, device=device, out=out,
        trial=trial_number, max_kb=max_kb)
    actions.retrain_command(req, echo=click.echo)
