"""`sceneclf export`: a model as an ONNX file, waveform in, logits out, checked with ONNX Runtime.

The whole model goes into the graph, the front end too: torch.onnx's exporter (torch.export,
`dynamo=True`) writes the STFT as ONNX's STFT operator (the TorchScript exporter cannot: it refuses
the STFT's complex output). Input `wave` is (batch, samples) float32 mono at the model's sample
rate, both axes dynamic (any number of samples >= n_fft); output `logits` is (batch, classes).
Class names, sample rate and precision are in the file's metadata. The mel filterbank, mostly
zeros, is stored as a sparse initializer (part of the ONNX standard; ONNX Runtime reads it).

Precisions:
- fp32: the model as trained, BatchNorm folded into the convolutions.
- fp16: the CNN's weights and activations in half precision, exported from PyTorch as such; the
  front end stays float32 (mel powers overflow half precision's range).
- int8: ONNX Runtime's static quantization (QDQ format, per-channel int8 weights, int8
  activations) of the convolutions and the linear head, calibrated on training clips; the front
  end stays float32.

After writing, the file is run in ONNX Runtime on the test clips, each clip whole, and its top
labels are compared with the PyTorch float model's. An fp32 file that disagrees on more than 1 %
of the clips is an export bug: it is removed and the command fails.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sceneclf.atomic import atomic_open
from sceneclf.data.audio import AudioConfig, WaveformCache
from sceneclf.data.manifest import load_manifest
from sceneclf.data.prepare import DataConfig, resolve_data
from sceneclf.echo import Echo
from sceneclf.errors import ConfigError, DataError, first_line
from sceneclf.model import PRECISIONS
from sceneclf.model.checkpoint import Checkpoint
from sceneclf.model.cnn import SceneClassifier

FORMATS = ("onnx",)
CALIBRATION_CLIPS = 64  # training clips that set int8 activation ranges
MIN_AGREEMENT = 0.99  # an fp32 file below this agreement with PyTorch is refused
INPUT, OUTPUT = "wave", "logits"


@dataclass(frozen=True)
class ExportRequest:
    precision: str
    out: Path
    data: DataConfig = field(default_factory=DataConfig)
    cache_dir: Path | None = None
    skip_bad: bool = False
    check_clips: int = 300


@dataclass
class Check:
    """ONNX Runtime against the PyTorch float model on whole clips."""

    clips: int
    agree: int  # same top label
    onnx_correct: int
    torch_correct: int
    max_abs_diff: float  # largest logit difference
    seconds: tuple[float, float]  # shortest and longest clip

    @property
    def agreement(self) -> float:
        return self.agree / self.clips if self.clips else float("nan")

    def format(self) -> str:
        lo, hi = self.seconds
        return (f"check: ONNX Runtime vs PyTorch (float) on {self.clips} test clips of {lo:.1f}-{hi:.1f} s: "
                f"same top label on {self.agree} ({100 * self.agreement:.1f} %); accuracy "
                f"{self.onnx_correct / self.clips:.3f} ONNX vs {self.torch_correct / self.clips:.3f} PyTorch; "
                f"largest logit difference {self.max_abs_diff:.2g}")


@dataclass
class ExportResult:
    path: Path
    precision: str
    bytes: int
    weight_bytes: int  # the CNN's initializers (weights, biases, quantization scales)
    check: Check | None
    seconds: float

    @property
    def kb(self) -> float:
        return self.bytes / 1000

    def format(self) -> str:
        line = (f"onnx: {self.path}, {self.kb:.1f} kB at {self.precision} (CNN weights {self.weight_bytes / 1000:.1f} kB, "
                f"the rest the float32 front end's constants and the graph), written in {self.seconds:.1f} s")
        return line + ("" if self.check is None else "\n" + self.check.format())


def require_onnx() -> None:
    """Refuse in one line when the export packages are missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"export needs onnx, onnxruntime and onnxscript: pip install 'sceneclf[export]' "
                          f"({first_line(exc)})") from None


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision}: use one of {', '.join(PRECISIONS)}")
    return precision


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """No exporter or quantizer log lines and warnings in the user's terminal (ours still raise)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


# -- building the file -------------------------------------------------------------------------
class _HalfCNN(nn.Module):
    """The front end in float32, the CNN in half precision, logits back in float32."""

    def __init__(self, model: SceneClassifier):
        super().__init__()
        self.frontend = model.frontend
        self.cnn = copy.deepcopy(model.cnn).half()

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.cnn(self.frontend(wave).half()).float()


def to_onnx(model: SceneClassifier, precision: str = "fp32", samples: int = 48000):
    """The float (or half-precision CNN) graph as an onnx.ModelProto; ConfigError if it cannot be
    exported."""
    require_onnx()
    net = model.fused()
    if precision == "fp16":
        net = _HalfCNN(net).eval()
    n_fft = model.frontend.cfg.n_fft
    example = torch.zeros(2, max(samples, 2 * n_fft))
    dims = {INPUT: {0: torch.export.Dim("batch"), 1: torch.export.Dim("samples", min=n_fft)}}
    try:
        with quiet():
            program = torch.onnx.export(net, (example,), None, input_names=[INPUT], output_names=[OUTPUT],
                                        dynamo=True, dynamic_shapes=dims, verbose=False, report=False)
    except Exception as exc:  # noqa: BLE001  (torch.export and the ONNX translation raise many kinds)
        raise ConfigError(f"the model cannot be exported to ONNX ({first_line(exc)})") from None
    return program.model_proto


def quantize_int8(proto, calibration: list[np.ndarray]):
    """Static int8 quantization (QDQ) of Conv and Gemm, activation ranges from `calibration`
    waveforms (each (samples,)); returns a new onnx.ModelProto."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if not calibration:
        raise DataError("int8 needs training clips to calibrate on; none could be read")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{INPUT: w[None, :].astype(np.float32)} for w in calibration])

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory(prefix="sceneclf-export-") as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        onnx.save(proto, src)
        try:
            with quiet():
                quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv", "Gemm"],
                                per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        except Exception as exc:  # noqa: BLE001  (the quantizer raises many kinds)
            raise ConfigError(f"int8 quantization failed ({first_line(exc)})") from None
        return onnx.load(dst)


def build(model: SceneClassifier, precision: str, calibration: list[np.ndarray] | None = None,
          classes: tuple[str, ...] = (), samples: int = 48000):
    """The ONNX model at `precision` (int8 needs `calibration` waveforms), with metadata."""
    check_precision(precision)
    proto = to_onnx(model, "fp16" if precision == "fp16" else "fp32", samples)
    if precision == "int8":
        proto = quantize_int8(proto, calibration or [])
    meta = {"classes": json.dumps(list(classes)), "sample_rate": str(model.frontend.cfg.sample_rate),
            "precision": precision, "input": f"{INPUT}: (batch, samples) float32 mono waveform",
            "output": f"{OUTPUT}: (batch, classes) float32", "producer": "sceneclf export"}
    strip_provenance(proto)
    sparsify_front_end(proto)
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    return proto


def strip_provenance(proto) -> None:
    """Drop the exporter's per-node notes (source paths and stack traces): a third of a small file."""
    for item in [*proto.graph.node, *proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        del item.metadata_props[:]
        item.doc_string = ""


def sparsify_front_end(proto) -> None:
    """Store the front end's mostly-zero constants (the mel filterbank: each filter spans a few
    FFT bins) as ONNX sparse initializers, when that is smaller; ONNX Runtime densifies them on load."""
    from onnx import helper, numpy_helper

    for init in list(proto.graph.initializer):
        if not init.name.startswith("frontend."):
            continue
        dense = numpy_helper.to_array(init)
        index = np.flatnonzero(dense)
        if index.size * (dense.itemsize + 8) >= dense.nbytes:  # int64 indices: sparse only pays below ~1/3 filled
            continue
        values = numpy_helper.from_array(dense.flat[index].astype(dense.dtype), init.name)
        indices = numpy_helper.from_array(index.astype(np.int64), f"{init.name}.indices")
        proto.graph.initializer.remove(init)
        proto.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, list(dense.shape)))


def weight_bytes(proto) -> int:
    """Bytes of the CNN's initializers (named cnn.*, also after quantization)."""
    from onnx import numpy_helper

    return sum(numpy_helper.to_array(t).nbytes for t in proto.graph.initializer if t.name.startswith("cnn."))


def session(path_or_bytes, threads: int = 0):
    """An ONNX Runtime CPU session of a file or serialized model (`threads` 0: ONNX Runtime's choice)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path_or_bytes) if isinstance(path_or_bytes, Path) else path_or_bytes,
                                options, providers=["CPUExecutionProvider"])


def run_onnx(sess, waves: np.ndarray) -> np.ndarray:
    """Logits of (batch, samples) waveforms."""
    return sess.run([OUTPUT], {INPUT: np.ascontiguousarray(waves, dtype=np.float32)})[0]


# -- clips and the check -----------------------------------------------------------------------
def spread(items: list, limit: int) -> list:
    """At most `limit` items, evenly spread over the list (all classes, not the first ones)."""
    if len(items) <= limit:
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def load_clips(data: DataConfig, audio: AudioConfig, cache_dir: Path, split: str, limit: int,
               classes: tuple[str, ...], skip_bad: bool = False) -> list[tuple[np.ndarray, int]]:
    """(waveform, class index in `classes`) for up to `limit` clips of `split`, decoded at the
    model's rate (through the waveform cache); DataError for classes the model does not know."""
    root = resolve_data(data, cache_dir)
    manifest = load_manifest(root, layout=data.layout, fold=data.fold, val_fraction=data.val_fraction,
                             test_fraction=data.test_fraction, seed=data.split_seed)
    index = {c: i for i, c in enumerate(classes)}
    chosen = spread([c for c in manifest.clips if (c.split or "train") == split], limit)
    unknown = sorted({c.label for c in chosen} - set(index))
    if unknown:
        raise DataError(f"{manifest.root}: classes the model does not know: {', '.join(unknown)} "
                        f"(it knows {', '.join(classes)})")
    waves = WaveformCache(cache_dir, audio)
    out = []
    for clip in chosen:
        try:
            out.append((waves.load(clip.path), index[clip.label]))
        except DataError:
            if not skip_bad:
                raise
    return out


def centre(wave: np.ndarray, length: int) -> np.ndarray:
    start = max(0, (len(wave) - length) // 2)
    return wave[start:start + length]


@torch.inference_mode()
def check(sess, model: SceneClassifier, clips: list[tuple[np.ndarray, int]], sample_rate: int) -> Check:
    """Each clip whole through ONNX Runtime and the PyTorch float model."""
    net = model.fused()
    agree = onnx_ok = torch_ok = 0
    diff = 0.0
    for wave, label in clips:
        ours = run_onnx(sess, wave[None, :])[0]
        ref = net(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))[None, :])[0].numpy()
        agree += int(ours.argmax() == ref.argmax())
        onnx_ok += int(ours.argmax() == label)
        torch_ok += int(ref.argmax() == label)
        diff = max(diff, float(np.abs(ours - ref).max()))
    lengths = [len(w) / sample_rate for w, _ in clips] or [0.0]
    return Check(len(clips), agree, onnx_ok, torch_ok, diff, (min(lengths), max(lengths)))


def export_model(ckpt: Checkpoint, req: ExportRequest, echo: Echo = lambda _: None) -> ExportResult:
    """Build, write (atomically), run in ONNX Runtime and compare with PyTorch."""
    from sceneclf.data.prepare import default_cache_dir

    require_onnx()
    check_precision(req.precision)
    if req.check_clips < 1:
        raise ConfigError(f"--check-clips {req.check_clips}: need at least 1")
    cache_dir = req.cache_dir or default_cache_dir()
    start = time.perf_counter()
    calibration = None
    if req.precision == "int8":
        train = load_clips(req.data, ckpt.audio, cache_dir, "train", CALIBRATION_CLIPS, ckpt.classes, req.skip_bad)
        calibration = [centre(w, ckpt.audio.clip_samples) for w, _ in train]
        echo(f"int8: convolutions and the linear head quantized by ONNX Runtime (static, QDQ, per-channel "
             f"weights), calibrated on {len(calibration)} training clips; the front end stays float32")
    elif req.precision == "fp16":
        echo("fp16: the CNN's weights and activations in half precision; the front end stays float32")
    proto = build(ckpt.model, req.precision, calibration, ckpt.classes, ckpt.audio.clip_samples)
    with atomic_open(req.out) as f:
        f.write(proto.SerializeToString())
    seconds = time.perf_counter() - start
    clips = load_clips(req.data, ckpt.audio, cache_dir, "test", req.check_clips, ckpt.classes, req.skip_bad)
    result = ExportResult(req.out, req.precision, req.out.stat().st_size, weight_bytes(proto), None, seconds)
    if clips:
        result.check = check(session(req.out), ckpt.model, clips, ckpt.audio.sample_rate)
        if req.precision == "fp32" and result.check.agreement < MIN_AGREEMENT:
            req.out.unlink(missing_ok=True)
            raise ConfigError(f"{req.out}: the ONNX model disagrees with PyTorch on "
                              f"{result.check.clips - result.check.agree} of {result.check.clips} clips; removed")
    return result
