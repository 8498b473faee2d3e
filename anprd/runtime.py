"""Inference runtimes: the model folder's three networks behind one small interface.

A model folder holds Keras weights (training's format, `anprd.model`) and, after
`python -m train.export --model DIR` (`make export`), the same networks as ONNX files. Inference
runs them with one of these backends:

    onnxruntime   ONNX Runtime (the default): the float32 files, on the CPU or, with its GPU build
                  (`make setup GPU=1`), on CUDAExecutionProvider
    openvino      OpenVINO on the CPU, when installed (`pip install '.[openvino]'`): about as fast
                  per network, slower to start (docs/speed.md, "Inference runtimes")
    tensorflow    Keras on TensorFlow, from the weights themselves: the reference, and what a network
                  that has no (current) export runs on; TensorFlow is imported only here

Every network takes a float32 NHWC batch of grayscale pixels (0-255) and returns named float32 arrays:

    detection   (n, h, w, 1) any h, w -> presence (n, r, c, 1) logits, box (n, r, c, 4)
    window      (n, 64, 128, 1)       -> presence (n, 1), box (n, 4), text (n, 32, 37) logits
    reader      (n, 32, 128, 1)       -> text (n, 32, 37) logits

`detector.runtime: auto` picks ONNX Runtime when it is installed and the folder's exported files
match its weights (model.json "exported" records each file's source weights and their SHA-256), else
OpenVINO the same way, else TensorFlow. `detector.precision: int8` loads the static int8 files
instead (faster, but read rates fall by 1-4 points; docs/speed.md). A network whose file is missing
or stale (a reader trained or fine-tuned after the export, `anprd finetune`'s included) runs on
TensorFlow with one log line; the other networks stay on the fast runtime. Naming a runtime makes a
missing file an error instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import sys
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anprd.config.detector import DetectorConfig
from cascade.models import ModelError

__all__ = ["FAST_RUNTIMES", "Network", "Networks", "available_runtimes", "exported_file", "first_line",
           "import_tensorflow", "load_networks", "onnx_network"]

log = logging.getLogger(__name__)

DETECTION, WINDOW = "detection", "window"
FAST_RUNTIMES = ("onnxruntime", "openvino")  # in the order `auto` tries them
_EXPORT_FORMAT = "anprd-export/1"


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message as one short line: Keras' weight errors run to 90 lines of tensors."""
    text = " ".join(str(exc).split("\n", 1)[0].split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def available_runtimes() -> list[str]:
    """The fast runtimes installed here, in `auto`'s order (found without importing them)."""
    return [name for name in FAST_RUNTIMES if importlib.util.find_spec(name) is not None]


class Network(ABC):
    """One network in one runtime: `network(batch)` -> {output name: float32 array}."""

    runtime: str = ""

    @abstractmethod
    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run on a float32 (n, h, w, 1) batch of pixels 0-255."""


@dataclass
class Networks:
    """The networks a detector runs, and where: `description` is for logs and `anprd detect --json`."""

    detection: Network
    window: Network
    readers: list[Network]
    description: str


# --------------------------------------------------------------------------------------------------
# Exported files
# --------------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


DEFAULT_DETECTOR_WEIGHTS = "weights.weights.h5"


def detector_weights_name(meta: dict, meta_path: Path) -> str:
    """The detection network's weights file in the model folder: model.json's "weights" (a folder
    from `anprd finetune` names its own fine-tuned file), else weights.weights.h5."""
    name = meta.get("weights", DEFAULT_DETECTOR_WEIGHTS)
    if not isinstance(name, str) or not name or Path(name).name != name:
        raise ModelError(f"{meta_path}: \"weights\" must name a file in the model folder, not {name!r}")
    return name


def exported_file(model_dir: Path, meta: dict, source: str, network: str, precision: str) -> Path | None:
    """The exported ONNX file of `network` ('detection', 'window' or a reader's weights file name) at
    `precision`, when model.json records one whose source weights still have the recorded hash."""
    record = meta.get("exported")
    if not isinstance(record, dict) or record.get("format") != _EXPORT_FORMAT:
        return None
    files = record.get("files")
    if not isinstance(files, dict):
        return None
    for name, entry in files.items():
        if (isinstance(entry, dict) and entry.get("network") == network
                and entry.get("precision") == precision and entry.get("from") == source):
            path, weights = model_dir / name, model_dir / source
            if path.is_file() and weights.is_file() and _sha256(weights) == entry.get("sha256"):
                return path
            return None
    return None


# --------------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------------
class _OpenVinoNetwork(Network):
    runtime = "openvino"

    def __init__(self, path: Path, threads: int) -> None:
        # f32 for what is not int8: this CPU would otherwise pick bf16, off TensorFlow's figures
        properties = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            properties["INFERENCE_NUM_THREADS"] = threads
        cache = _openvino_cache(path)
        if cache:  # a compiled network loads ~10x faster than the ONNX file compiles (docs/speed.md)
            properties["CACHE_DIR"] = cache
        try:
            compiled = _openvino_core().compile_model(str(path), "CPU", properties)
        except RuntimeError as exc:
            raise ModelError(f"{path}: OpenVINO cannot load it ({first_line(exc)})") from None
        self._request = compiled.create_infer_request()
        self._names = [output.get_any_name() for output in compiled.outputs]

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        result = self._request.infer([np.ascontiguousarray(batch, np.float32)])
        return {name: result[i] for i, name in enumerate(self._names)}


_CORE = None


def _openvino_cache(path: Path) -> str | None:
    """A folder for OpenVINO's compiled copy of the file at `path`, named by the file's hash: OpenVINO
    keys its cache by path, so a file exported again in place would load the old network. Under
    systemd, `CacheDirectory=` (`$CACHE_DIRECTORY`); else `$XDG_CACHE_HOME/anprd` or ~/.cache/anprd;
    None (no cache, each start compiles) where none is writable."""
    base = os.environ.get("CACHE_DIRECTORY")
    try:
        if base:
            root = Path(base)
        else:
            root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "anprd"
        folder = root / "openvino" / _sha256(path)[:24]
        folder.mkdir(parents=True, exist_ok=True)
    except (OSError, RuntimeError):  # RuntimeError: no home folder to be found
        return None
    return str(folder) if os.access(folder, os.W_OK) else None


def _openvino_core():
    global _CORE
    if _CORE is None:  # one Core per process: it owns the plugin and its thread pool
        import openvino as ov

        _CORE = ov.Core()
    return _CORE


class _OnnxRuntimeNetwork(Network):
    runtime = "onnxruntime"

    def __init__(self, path: Path, threads: int, providers: list[str]) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3  # its warnings about unused initialisers are not the user's
        # no spin-waiting between calls: the cores are shared with decoding and the HOG pre-filter,
        # and on a busy machine spinning threads made detection ~1.5x slower (docs/speed.md)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for a bad file
            raise ModelError(f"{path}: ONNX Runtime cannot load it ({first_line(exc)})") from None
        self._input = self._session.get_inputs()[0].name
        self._names = [output.name for output in self._session.get_outputs()]
        self.device = "GPU" if self._session.get_providers()[0] == "CUDAExecutionProvider" else "CPU"

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self._session.run(None, {self._input: np.ascontiguousarray(batch, np.float32)})
        return dict(zip(self._names, outputs, strict=True))


def onnx_network(path: Path, threads: int = 0, device: str = "cpu") -> Network:
    """An ONNX file on ONNX Runtime (a cascade stage's network: `cascade.proposer`)."""
    return _OnnxRuntimeNetwork(path, threads, _onnx_providers(device))


def _onnx_providers(device: str) -> list[str]:
    """CUDA first where the config allows a GPU and this onnxruntime build has it."""
    import onnxruntime as ort

    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "gpu" and not cuda:
        raise ModelError("detector.device is 'gpu' but this onnxruntime has no CUDAExecutionProvider "
                         "(install the GPU build: pip install '.[gpu]', docs/speed.md)")
    if not cuda or device == "cpu":
        return ["CPUExecutionProvider"]
    if hasattr(ort, "preload_dlls"):  # the CUDA and cuDNN libraries of the nvidia-* wheels ('.[gpu]')
        with contextlib.suppress(Exception):  # system-wide CUDA libraries serve as well
            ort.preload_dlls()
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


class _TensorFlowNetwork(Network):
    runtime = "tensorflow"

    def __init__(self, function, tf, device: str) -> None:
        self._function, self._tf, self._device = function, tf, device

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        with self._tf.device(self._device):
            out = self._function(np.asarray(batch, np.float32))
        return {name: value.numpy() for name, value in out.items()}


class _TensorFlow:
    """Keras models of a model folder on TensorFlow, imported on first use only."""

    def __init__(self, config: DetectorConfig) -> None:
        if config.threads:
            os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(config.threads))
        tf = import_tensorflow()
        if config.threads:
            with contextlib.suppress(RuntimeError):  # already initialised in this process
                tf.config.threading.set_intra_op_parallelism_threads(config.threads)
        gpus = tf.config.list_physical_devices("GPU")
        if config.device == "gpu" and not gpus:
            raise ModelError("detector.device is 'gpu' but TensorFlow sees no GPU")
        self.tf = tf
        self.device = "/GPU:0" if gpus and config.device != "cpu" else "/CPU:0"
        self._net = None

    def plate_net(self, model_dir: Path, meta: dict) -> tuple[Network, Network]:
        """The detection and window networks from the model's detection weights."""
        from anprd.model import NetConfig, PlateNet

        tf, meta_path = self.tf, model_dir / "model.json"
        try:
            net_config = NetConfig.from_json(meta["net"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelError(f"{meta_path}: bad \"net\" description ({exc!r})") from None
        with tf.device(self.device):
            try:
                net = PlateNet(net_config)
            except (TypeError, ValueError) as exc:  # sizes Keras cannot build, e.g. "stem": -1
                raise ModelError(f"{meta_path}: bad \"net\" description ({first_line(exc)})") from None
            _load_weights(net.window_model, model_dir / detector_weights_name(meta, meta_path))
        detect = tf.function(lambda x: net.detection_model(x, training=False),
                             input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32)])
        window = tf.function(lambda x: net.window_model(x, training=False),
                             input_signature=[tf.TensorSpec([None, 64, 128, 1], tf.float32)])
        return _TensorFlowNetwork(detect, tf, self.device), _TensorFlowNetwork(window, tf, self.device)

    def reader(self, weights: Path, config, meta_path: Path) -> Network:
        from anprd.model import build_reader

        tf = self.tf
        with tf.device(self.device):
            try:
                model = build_reader(config)
            except (TypeError, ValueError) as exc:
                raise ModelError(f"{meta_path}: bad reader description ({first_line(exc)})") from None
            _load_weights(model, weights)
        function = tf.function(lambda x: {"text": model(x, training=False)["text"]},
                               input_signature=[tf.TensorSpec([None, 32, 128, 1], tf.float32)])
        return _TensorFlowNetwork(function, tf, self.device)


def import_tensorflow():
    """TensorFlow (and Keras), imported with stderr set aside: while it loads it prints absl and
    oneDNN notices whatever its log level, and a user error must stay one line. What it said is
    shown if loading fails."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    if "tensorflow" not in sys.modules:
        from anprd.logs import stderr_set_aside

        said = None
        try:
            with stderr_set_aside() as said:
                import keras  # noqa: F401 - loads TensorFlow too; both print at load
        except BaseException:
            if said:  # what TensorFlow said may explain why
                sys.stderr.buffer.write(said)
                sys.stderr.flush()
            raise
    import tensorflow as tf

    return tf


def _load_weights(model, weights: Path) -> None:
    """`model.load_weights(weights)`, any failure as one ModelError line naming the file."""
    try:
        with warnings.catch_warnings():  # a mismatched file also warns once per layer
            warnings.simplefilter("ignore")
            model.load_weights(weights)
    except Exception as exc:  # h5py/keras raise many types for a bad file
        raise ModelError(f"{weights}: cannot load weights ({first_line(exc)})") from None


# --------------------------------------------------------------------------------------------------
# Choosing and loading
# --------------------------------------------------------------------------------------------------
def _fast_runtime(config: DetectorConfig) -> str | None:
    """The fast runtime the config asks for, or None for TensorFlow everywhere."""
    installed = available_runtimes()
    if config.runtime == "tensorflow":
        return None
    if config.runtime != "auto":
        if config.runtime not in installed:
            raise ModelError(f"detector.runtime is '{config.runtime}' but {config.runtime} is not "
                             "installed (pip install -e .)")
        return config.runtime
    if config.device == "gpu":  # only ONNX Runtime's CUDA build serves a GPU here
        return "onnxruntime" if "onnxruntime" in installed else None
    return installed[0] if installed else None


def load_networks(model_dir: Path, meta: dict, config: DetectorConfig, readers: bool = True) -> Networks:
    """The folder's detection and window networks, and its plate readers (model.json "readers") when
    `readers`, each on the runtime `config.runtime`/`device`/`precision` choose (module docstring)."""
    meta_path = model_dir / "model.json"
    fast = _fast_runtime(config)
    precisions: set[str] = set()

    def precision_of(network: str) -> str:
        # auto is float32 (docs/speed.md, "Inference runtimes"): static int8 made OpenVINO's detection
        # network ~1.6x faster but cost 1.4-3.6 points of the `us` read rate however it was split
        # (every network, the detection network alone, or that without its stem and head), and
        # ONNX Runtime's int8 depthwise convolutions are slower than its float ones
        return "float32" if config.precision == "auto" else config.precision
    tensorflow: _TensorFlow | None = None

    def on_tensorflow() -> _TensorFlow:
        nonlocal tensorflow
        tensorflow = tensorflow or _TensorFlow(config)
        return tensorflow

    def fast_network(source: str, network: str) -> Network | None:
        if not fast:
            return None
        path = None
        for candidate in dict.fromkeys((precision_of(network), "float32")):  # int8 not exported: float
            path = exported_file(model_dir, meta, source, network, candidate)
            if path:
                precisions.add(candidate)
                break
        if path is None:
            if config.runtime != "auto":
                raise ModelError(f"{model_dir}: no current {network} export for detector.runtime "
                                 f"'{config.runtime}' (run: python -m train.export --model {model_dir})")
            log.info("%s has no current exported file; it runs on TensorFlow "
                     "(python -m train.export --model %s exports it)", model_dir / source, model_dir)
            return None
        if fast == "openvino":
            return _OpenVinoNetwork(path, config.threads)
        return _OnnxRuntimeNetwork(path, config.threads, _onnx_providers(config.device))

    detector_weights = detector_weights_name(meta, model_dir / "model.json")
    detection = fast_network(detector_weights, DETECTION)
    window = fast_network(detector_weights, WINDOW)
    if detection is None or window is None:
        tf_detection, tf_window = on_tensorflow().plate_net(model_dir, meta)
        detection, window = detection or tf_detection, window or tf_window

    records = meta.get("readers", []) if readers else []
    if not isinstance(records, list):
        raise ModelError(f"{meta_path}: \"readers\" must be a list")
    reader_nets: list[Network] = []
    for record in records:
        try:
            source = str(record["weights"])
        except (KeyError, TypeError) as exc:
            raise ModelError(f"{meta_path}: bad reader description ({exc!r})") from None
        if not (model_dir / source).is_file():
            raise ModelError(f"{model_dir / source}: reader weights missing (model.json names them)")
        reader = fast_network(source, source)
        if reader is None:
            from anprd.model import ReaderConfig

            try:
                reader_config = ReaderConfig.from_json(record["net"])
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise ModelError(f"{meta_path}: bad reader description ({exc!r})") from None
            reader = on_tensorflow().reader(model_dir / source, reader_config, meta_path)
        reader_nets.append(reader)

    used = [detection, window, *reader_nets]
    parts = []
    for runtime in dict.fromkeys(n.runtime for n in used):
        count = sum(n.runtime == runtime for n in used)
        where = getattr(next(n for n in used if n.runtime == runtime), "device", "CPU")
        if tensorflow and runtime == "tensorflow":
            where = tensorflow.device.removeprefix("/").removesuffix(":0")
        label = f"{runtime} {'+'.join(sorted(precisions))}" if runtime == fast else runtime
        parts.append(f"{label} on {where} ({count} of {len(used)} networks)")
    return Networks(detection, window, reader_nets, "; ".join(parts))
