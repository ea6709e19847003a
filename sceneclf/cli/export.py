"""`sceneclf export`: a model as an ONNX file (see sceneclf.tasks.export)."""

from __future__ import annotations

from pathlib import Path

import click

from sceneclf.cli.group import cli
from sceneclf.cli.options import data_options


@cli.command()
@click.argument("model")
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True,
              help="File format.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"], case_sensitive=False), default="fp32",
              show_default=True,
              help="fp32 as trained; fp16: the CNN in half precision; int8: ONNX Runtime static "
                   "quantization of the convolutions and head, calibrated on training clips. The front "
                   "end stays float32.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="ONNX file [default: ./<model name>-<precision>.onnx].")
@click.option("--check-clips", type=click.IntRange(1), default=300, show_default=True,
              help="Test clips run through ONNX Runtime and PyTorch to compare top labels.")
@data_options
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI",
              help="Where to find an MLflow model [env MLFLOW_TRACKING_URI].")
def export(model, fmt, precision, out, check_clips, data, layout, fold, skip_bad, cache_dir, tracking_uri) -> None:
    """Write a model as an ONNX file: waveform in, logits out, checked with ONNX Runtime.

    MODEL is a checkpoint file or an MLflow model URI. The front end (STFT, mel, MFCC) is inside
    the graph: input `wave` is (batch, samples) float32 mono at the model's sample rate, any
    length of at least n_fft samples; output `logits` is (batch, classes). Class names are in the
    file's metadata. The file is then run on the data's test clips (default: the embedded
    synthetic data) and its top labels compared with the PyTorch model's; --data also supplies the
    training clips int8 is calibrated on.

    Example: sceneclf export model.pt --format onnx --precision int8 --out model-int8.onnx
    """
    from sceneclf.cli.actions import check_writable, data_config
    from sceneclf.tasks import export as ex
    from sceneclf.tracking.models import load_model

    precision = precision.lower()
    ex.require_onnx()
    loaded = load_model(model, tracking_uri)
    ckpt = loaded.checkpoint
    out = (out or Path(f"{loaded.label}-{precision}.{fmt}")).absolute()
    check_writable(out)
    click.echo(f"model: {loaded.source} ({len(ckpt.classes)} classes, {ckpt.audio.sample_rate} Hz)")
    click.echo(f"graph: waveform in (batch x samples, any length of at least {ckpt.features.n_fft} samples), "
               "logits out; the front end inside the graph")
    req = ex.ExportRequest(precision, out, data_config(data, layout, fold), cache_dir, skip_bad, check_clips)
    result = ex.export_model(ckpt, req, echo=click.echo)
    click.echo(result.format())
