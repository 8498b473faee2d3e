"""Export a model folder's TensorFlow weights to ONNX, the runtime inference serves from.

    python -m train.export --model models/anprd-v10                  # float32 and int8 ONNX files
    python -m train.export --model models/anprd-v10 --precision float32   # float32 only
    python -m train.export --model models/anprd-v10 --compare        # every candidate runtime, timed

Training stays on TensorFlow/Keras; inference (`anprd.runtime`) loads the exported files with ONNX
Runtime and never imports TensorFlow. Three networks are written into the model folder:

    detection.onnx       the detection twin, (n, h, w, 1) float32 pixels -> presence (n, r, c, 1) logits
                         and box (n, r, c, 4) window fractions; any h, w (pages vary in size)
    window.onnx          the window network, (n, 64, 128, 1) -> presence (n, 1), box (n, 4), text (n, 32, 37)
    reader-NAME.onnx     each plate reader (model.json "readers"), (n, 32, 128, 1) -> text (n, 32, 37)

and each again statically quantised as NAME.int8.onnx. model.json gets an "exported" record: the
converter and opset, the command, and for each file its network, precision and the weights it came
from with their SHA-256, so a reader retrained or fine-tuned after the export is seen to be stale
(`anprd.runtime` then runs that network on TensorFlow).

Why ONNX Runtime, float32 (docs/speed.md, "Inference runtimes"): `--compare` times ONNX Runtime,
TFLite/LiteRT with XNNPACK and OpenVINO, float and static int8, on a 720p page and on 16 reader crops;
int8 was faster only with OpenVINO and cost 1.4-3.6 points of the `us` read rate, so inference loads
the float32 files unless `detector.precision: int8`. Int8 calibration uses street frames and
synthetic plate windows and crops (`--backgrounds`), never the evaluation photos. Tensors are named
by their place in the graph, so unchanged weights export to the same weights under the same names;
the bytes still vary now and then (tf2onnx's optimisations left one node fewer in about one export
of three), never the outputs.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from anprd.runtime import detector_weights_name, first_line
from cascade.models import ModelError

__all__ = ["EXPORT_FORMAT", "OPSET", "calibration_batches", "export_onnx", "main", "sha256_file"]

EXPORT_FORMAT = "anprd-export/1"
OPSET = 17
DETECTION_FILE, WINDOW_FILE = "detection.onnx", "window.onnx"
CALIBRATION_SEED = 880001  # its own seed: calibration never shares samples with validation sets


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (how an export names the weights it came from)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def reader_file(weights: str) -> str:
    """The exported file of a reader's weights file: reader-r13.weights.h5 -> reader-r13.onnx."""
    return Path(weights).name.removesuffix(".weights.h5").removesuffix(".h5") + ".onnx"


# --------------------------------------------------------------------------------------------------
# TensorFlow side: the Keras models of a folder as tf.functions with named outputs
# --------------------------------------------------------------------------------------------------
def _tf_functions(model_dir: Path) -> tuple[dict, dict]:
    """{name: (tf.function, input TensorSpec, source weights)} for the folder's networks, and its
    model.json."""
    import tensorflow as tf

    from anprd.model import NetConfig, PlateNet, ReaderConfig, build_reader

    meta = json.loads((model_dir / "model.json").read_text())
    detector_weights = detector_weights_name(meta, model_dir / "model.json")  # a fine-tuned one too
    net = PlateNet(NetConfig.from_json(meta["net"]))
    net.window_model.load_weights(model_dir / detector_weights)
    functions = {
        DETECTION_FILE: (tf.function(lambda x: net.detection_model(x, training=False)),
                         tf.TensorSpec([None, None, None, 1], tf.float32, name="image"), detector_weights),
        WINDOW_FILE: (tf.function(lambda x: net.window_model(x, training=False)),
                      tf.TensorSpec([None, 64, 128, 1], tf.float32, name="window"), detector_weights),
    }
    for record in meta.get("readers", []):
        reader = build_reader(ReaderConfig.from_json(record["net"]))
        reader.load_weights(model_dir / record["weights"])
        functions[reader_file(record["weights"])] = (
            tf.function(lambda x, reader=reader: reader(x, training=False)),
            tf.TensorSpec([None, 32, 128, 1], tf.float32, name="plate"), record["weights"])
    return functions, meta


# --------------------------------------------------------------------------------------------------
# Calibration data for static int8: street frames and synthetic windows / plate crops
# --------------------------------------------------------------------------------------------------
def calibration_batches(name: str, backgrounds: list[Path], count: int = 32) -> list[np.ndarray]:
    """float32 (n, h, w, 1) batches that the network `name` sees in use: pages cut from street frames
    at a few pyramid scales (detection), synthetic 64x128 windows (window), synthetic plate crops
    cut as the detector cuts them (readers). Seeded; never the evaluation photos."""
    import cv2

    from train.fonts import available_fonts
    from train.gen import (
        IMAGE_SUFFIXES,
        builtin_background_dirs,
        make_backgrounds,
        sample_read_crop,
        sample_window,
    )

    rng = np.random.default_rng(CALIBRATION_SEED)
    if name == DETECTION_FILE:  # street frames; the photos scikit-image bundles where there are none
        frames = sorted(p for folder in backgrounds for p in Path(folder).iterdir()
                        if p.suffix.lower() in IMAGE_SUFFIXES)
        frames = frames or sorted(p for folder in builtin_background_dirs() for p in Path(folder).iterdir()
                                  if p.suffix.lower() in IMAGE_SUFFIXES)
        batches = []
        for path in rng.permutation(np.array(frames, dtype=object))[:count]:
            gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if gray is None:
                continue
            scale = float(rng.choice([0.4, 0.6, 0.8, 1.0]))
            level = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            h, w = min(level.shape[0], 512), min(level.shape[1], 1024)
            batches.append(level[:h, :w][None, :, :, None].astype(np.float32))
        return batches
    bgs = make_backgrounds(list(backgrounds), True, rng)
    fonts = available_fonts()
    if name == WINDOW_FILE:
        images = [sample_window(rng, bgs, fonts, 1.0).image for _ in range(count * 8)]
    else:
        images = [sample_read_crop(rng, bgs, fonts, 1.0).image for _ in range(count * 8)]
    stack = np.stack(images)[..., None].astype(np.float32)
    return [stack[i: i + 8] for i in range(0, len(stack), 8)]


# --------------------------------------------------------------------------------------------------
# ONNX (the shipped runtime)
# --------------------------------------------------------------------------------------------------
def _to_onnx(function, spec, path: Path) -> None:
    import onnx
    import tf2onnx

    model, _ = tf2onnx.convert.from_function(function, input_signature=[spec], opset=OPSET)
    model = _canonical_names(model)
    _match_keras(model, function, spec, path)
    onnx.save(model, str(path))


def _match_keras(model, function, spec, path: Path) -> None:
    """Check the converted graph against the Keras function on a seeded sample, in place. tf2onnx
    sometimes drops the Squeeze that ends the detection twin's presence output (two exports in five
    of the same weights, in fresh processes), leaving a leading unit axis: that axis is squeezed
    again here. Any other difference is an error naming the file."""
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    free = {0: 2, 1: 72, 2: 136}  # two images; a detection page's free sides: 2 x 2 windows
    shape = [free[axis] if dim is None else dim for axis, dim in enumerate(spec.shape.as_list())]
    sample = np.random.default_rng(CALIBRATION_SEED).uniform(0, 255, shape).astype(np.float32)
    expected = {name: np.asarray(value) for name, value in function(sample).items()}

    def run() -> dict[str, np.ndarray]:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        names = [output.name for output in session.get_outputs()]
        return dict(zip(names, session.run(None, {session.get_inputs()[0].name: sample}), strict=True))

    graph = model.graph
    for name, got in run().items():
        extra = got.ndim - expected[name].ndim
        if extra <= 0 or got.shape[:extra] != (1,) * extra:
            continue
        inner = f"{name}_before_squeeze"
        for node in graph.node:
            node.input[:] = [inner if value == name else value for value in node.input]
            node.output[:] = [inner if value == name else value for value in node.output]
        axes = numpy_helper.from_array(np.arange(extra, dtype=np.int64), f"{name}_squeeze_axes")
        graph.initializer.append(axes)
        graph.node.append(helper.make_node("Squeeze", [inner, axes.name], [name], name=f"squeeze_{name}"))
        declared = next(output for output in graph.output if output.name == name)
        del declared.type.tensor_type.shape.dim[:extra]
    for name, got in run().items():
        if got.shape != expected[name].shape or not np.allclose(got, expected[name], rtol=1e-3, atol=1e-3):
            want = expected[name]
            difference = (f"shape {got.shape} against {want.shape}" if got.shape != want.shape
                          else f"by up to {float(np.max(np.abs(got - want))):.2g}")
            raise RuntimeError(f"{path.name}: the converted network's {name} output differs from the Keras "
                               f"model's ({difference})")


def _canonical_names(model):
    """The model with its tensors named by their place in the graph. tf2onnx names the constants it
    folds from a counter shared by the whole process, so the same weights exported twice would
    differ in names; renamed, they do not."""
    graph = model.graph
    keep = {value.name for value in [*graph.input, *graph.output]}
    constants = {tensor.name for tensor in graph.initializer}
    names: dict[str, str] = {}
    for node in graph.node:  # constants by first use: tf2onnx lists them in no fixed order
        for name in node.input:
            if name in constants and name not in names:
                names[name] = f"const_{len(names)}"
    for name in sorted(constants - names.keys()):  # unused ones (none seen), last
        names[name] = f"const_{len(names)}"
    ordered = sorted(graph.initializer, key=lambda tensor: int(names[tensor.name].split("_")[1]))
    del graph.initializer[:]
    graph.initializer.extend(ordered)
    for i, node in enumerate(graph.node):
        node.name = f"{node.op_type.lower()}_{i}"
        for j, output in enumerate(node.output):
            if output not in keep:
                names.setdefault(output, f"{node.name}_out{j}")
    for tensor in graph.initializer:
        tensor.name = names[tensor.name]
    for node in graph.node:
        node.input[:] = [names.get(name, name) for name in node.input]
        node.output[:] = [names.get(name, name) for name in node.output]
    for info in graph.value_info:
        info.name = names.get(info.name, info.name)
    symbols: dict[str, str] = {}  # free dimensions (batch, height, width), "unk__N" from the same counter
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = symbols.setdefault(dim.dim_param, f"dim_{len(symbols)}")
    return model


def _quantize_onnx(source: Path, target: Path, batches: list[np.ndarray]) -> None:
    """Static int8 (QDQ, per-channel weights) of an ONNX file, calibrated on `batches`."""
    import onnxruntime.quantization as oq

    input_name = _onnx_input_name(source)

    class _Reader(oq.CalibrationDataReader):
        def __init__(self) -> None:
            self._batches: Iterator[np.ndarray] = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {input_name: batch}

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        oq.shape_inference.quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        oq.quantize_static(str(prepared), str(target), _Reader(), quant_format=oq.QuantFormat.QDQ,
                           per_channel=True, activation_type=oq.QuantType.QUInt8,
                           weight_type=oq.QuantType.QInt8, calibrate_method=oq.CalibrationMethod.MinMax)


def _onnx_input_name(path: Path) -> str:
    import onnx

    return onnx.load(str(path)).graph.input[0].name


def export_onnx(model_dir: Path, precisions: tuple[str, ...] = ("float32", "int8"),
                backgrounds: list[Path] | None = None, record: bool = True) -> dict:
    """Write the folder's networks as ONNX files at each precision into the model folder (float32:
    NAME.onnx, int8: NAME.int8.onnx) and, with `record`, the "exported" record into its model.json;
    returns the record."""
    import onnx
    import tf2onnx

    functions, meta = _tf_functions(model_dir)
    files = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (function, spec, source) in functions.items():
            float_path = model_dir / name if "float32" in precisions else Path(tmp) / name
            _to_onnx(function, spec, float_path)
            targets = {"float32": float_path} if "float32" in precisions else {}
            if "int8" in precisions:
                targets["int8"] = model_dir / name.replace(".onnx", ".int8.onnx")
                _quantize_onnx(float_path, targets["int8"], calibration_batches(name, backgrounds or []))
            network = {DETECTION_FILE: "detection", WINDOW_FILE: "window"}.get(name, source)
            for precision, target in targets.items():
                onnx.checker.check_model(str(target))
                files[target.name] = {"network": network, "precision": precision, "from": source,
                                      "sha256": sha256_file(model_dir / source),
                                      "bytes": target.stat().st_size}
                print(f"{target}: {target.stat().st_size / 1e6:.2f} MB ({precision}) from {source}",
                      file=sys.stderr)
    exported = {
        "format": EXPORT_FORMAT,
        "runtime": "onnx",
        "converter": f"tf2onnx {tf2onnx.__version__} (opset {OPSET}) from the Keras weights; int8: "
                     "onnxruntime.quantization static QDQ, per-channel int8 weights, uint8 activations, "
                     "MinMax calibration on street-frame pages and synthetic windows and plate crops "
                     f"(seed {CALIBRATION_SEED})",
        "command": "python -m train.export --model " + str(model_dir)
                   + ("" if len(precisions) == 2 else f" --precision {precisions[0]}"),
        "files": files,
    }
    if record:
        meta["exported"] = exported
        (model_dir / "model.json").write_text(json.dumps(meta, indent=1) + "\n")
    return exported


# --------------------------------------------------------------------------------------------------
# --compare: the candidates side by side
# --------------------------------------------------------------------------------------------------
def _tflite(function, spec, path: Path, batches: list[np.ndarray] | None) -> None:
    import tensorflow as tf

    concrete = function.get_concrete_function(spec)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], function)
    if batches is not None:  # static int8 with float input and output
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([b] for b in batches)
    path.write_bytes(converter.convert())


def _tflite_runner(path: Path, threads: int) -> Callable[[np.ndarray], list[np.ndarray]]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    shapes: dict[str, tuple] = {"shape": ()}

    def run(batch: np.ndarray) -> list[np.ndarray]:
        index = interpreter.get_input_details()[0]["index"]
        if shapes["shape"] != batch.shape:  # XNNPACK re-plans per input shape
            interpreter.resize_tensor_input(index, batch.shape)
            interpreter.allocate_tensors()
            shapes["shape"] = batch.shape
        interpreter.set_tensor(index, batch)
        interpreter.invoke()
        return [interpreter.get_tensor(o["index"]) for o in interpreter.get_output_details()]

    return run


def _onnx_runner(path: Path, threads: int) -> Callable[[np.ndarray], list[np.ndarray]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})


def _openvino_runner(path: Path, threads: int) -> Callable[[np.ndarray], list[np.ndarray]]:
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                          "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    return lambda batch: list(request.infer([batch]).values())


def _ms(run: Callable[[np.ndarray], object], batch: np.ndarray, repeats: int) -> float:
    """Median milliseconds of `run(batch)` after two warm-up calls."""
    run(batch)
    run(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(batch)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def compare(model_dir: Path, out_dir: Path, backgrounds: list[Path], threads: int,
            repeats: int) -> list[dict]:
    """Export every candidate (runtime x precision) of the detection network and the first reader into
    `out_dir` and time each on a 720p page and on 16 reader crops; one row per candidate."""
    import tensorflow as tf

    with contextlib.suppress(RuntimeError):  # before the first op, or TensorFlow refuses
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    functions, meta = _tf_functions(model_dir)
    reader_name = reader_file(meta["readers"][0]["weights"])
    rng = np.random.default_rng(0)
    page = rng.integers(0, 256, (1, 720, 1280, 1)).astype(np.float32)
    crops = rng.integers(0, 256, (16, 32, 128, 1)).astype(np.float32)
    rows = [{"runtime": "tensorflow", "precision": "float32",
             "detection_ms": _ms(lambda b: functions[DETECTION_FILE][0](b), page, repeats),
             "reader_ms": _ms(lambda b: functions[reader_name][0](b), crops, repeats),
             "bytes": (model_dir / functions[DETECTION_FILE][2]).stat().st_size
             + (model_dir / meta["readers"][0]["weights"]).stat().st_size}]
    calibration = {name: calibration_batches(name, backgrounds) for name in (DETECTION_FILE, reader_name)}
    for precision in ("float32", "int8"):
        paths: dict[str, dict[str, Path]] = {"onnx": {}, "tflite": {}}
        for name in (DETECTION_FILE, reader_name):
            function, spec, _ = functions[name]
            stem = Path(name).stem + ("-int8" if precision == "int8" else "")
            onnx_path = out_dir / f"{stem}.onnx"
            if precision == "int8":
                float_path = out_dir / f"{Path(name).stem}.onnx"
                _quantize_onnx(float_path, onnx_path, calibration[name])
            else:
                _to_onnx(function, spec, onnx_path)
            paths["onnx"][name] = onnx_path
            tflite_path = out_dir / f"{stem}.tflite"
            _tflite(function, spec, tflite_path, calibration[name] if precision == "int8" else None)
            paths["tflite"][name] = tflite_path
        for runtime, make, files in (("onnxruntime", _onnx_runner, paths["onnx"]),
                                     ("tflite-xnnpack", _tflite_runner, paths["tflite"]),
                                     ("openvino", _openvino_runner, paths["onnx"])):
            try:
                detection, reader = make(files[DETECTION_FILE], threads), make(files[reader_name], threads)
                row = {"runtime": runtime, "precision": precision,
                       "detection_ms": _ms(detection, page, repeats),
                       "reader_ms": _ms(reader, crops, repeats),
                       "bytes": files[DETECTION_FILE].stat().st_size + files[reader_name].stat().st_size}
            except Exception as exc:  # a candidate that cannot run this graph is a finding, not a crash
                row = {"runtime": runtime, "precision": precision, "error": " ".join(str(exc).split())[:160]}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model folder (model.json + *.weights.h5)")
    parser.add_argument("--precision", choices=["both", "float32", "int8"], default="both",
                        help="files to write: float32, static int8 (calibrated), or both (default)")
    parser.add_argument("--backgrounds", action="append", default=None,
                        help="street frames for int8 calibration (repeatable; default "
                             "../shared/data/streets)")
    parser.add_argument("--compare", action="store_true",
                        help="time every candidate runtime and precision instead of exporting")
    parser.add_argument("--out", help="--compare: folder for the candidates' files (default: temporary)")
    parser.add_argument("--threads", type=int, default=2, help="--compare: threads per runtime")
    parser.add_argument("--repeats", type=int, default=20, help="--compare: timed calls per figure")
    args = parser.parse_args(argv)
    model_dir = Path(args.model)
    if not (model_dir / "model.json").is_file():
        print(f"{model_dir / 'model.json'}: missing (not a model folder)", file=sys.stderr)
        return 2
    try:
        meta = json.loads((model_dir / "model.json").read_text())
        weights = model_dir / detector_weights_name(meta, model_dir / "model.json")
    except (OSError, ValueError, AttributeError, ModelError) as exc:
        print(f"{model_dir / 'model.json'}: not a model folder's metadata ({first_line(exc)})",
              file=sys.stderr)
        return 2
    if not weights.is_file():
        print(f"{weights}: missing (not a model folder)", file=sys.stderr)
        return 2
    backgrounds = [Path(b) for b in (args.backgrounds or ["../shared/data/streets"])]
    if args.backgrounds and not all(b.is_dir() for b in backgrounds):
        print(f"--backgrounds: no such folder among {', '.join(map(str, backgrounds))}", file=sys.stderr)
        return 2
    backgrounds = [b for b in backgrounds if b.is_dir()]  # none: scikit-image's photos (a fresh clone)
    if args.compare:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(args.out or tmp)
            out.mkdir(parents=True, exist_ok=True)
            rows = compare(model_dir, out, backgrounds, args.threads, args.repeats)
        print(f"{'runtime':<16}{'precision':<10}{'detection 720p ms':>19}{'reader x16 ms':>15}{'MB':>7}")
        for row in rows:
            if "error" in row:
                print(f"{row['runtime']:<16}{row['precision']:<10}  failed: {row['error']}")
            else:
                print(f"{row['runtime']:<16}{row['precision']:<10}{row['detection_ms']:>19.1f}"
                      f"{row['reader_ms']:>15.2f}{row['bytes'] / 1e6:>7.2f}")
        return 0
    precisions = ("float32", "int8") if args.precision == "both" else (args.precision,)
    export_onnx(model_dir, precisions, backgrounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
