"""Inference runtimes (anprd/runtime.py): the exported networks agree with TensorFlow's on the shipped
model, the detect path runs without importing TensorFlow, and stale or missing exports fall back or
fail by name."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from generated_scenes import generated_scenes

from anprd.config.detector import DetectorConfig
from anprd.detector import ModelError, PlateDetector, read_crop_window, reader_crop
from anprd.runtime import available_runtimes, exported_file

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / DetectorConfig().model  # the shipped default model
META = json.loads((MODEL / "model.json").read_text())
READER = META["readers"][0]["weights"]
FAST = available_runtimes()
# (runtime, precision) pairs, each checked against TensorFlow
VARIANTS = [(runtime, precision) for runtime in FAST for precision in ("float32", "int8")]
# Largest differences from TensorFlow allowed: float32 files compute the same graph (seen: < 1e-5);
# int8 quantises weights and activations (seen on these scenes: grid probabilities 0.22 at most,
# far from a threshold only on few cells; reader probabilities 0.08 at most).
TOLERANCE = {"float32": {"grid_max": 1e-3, "grid_mean": 1e-4, "read_max": 1e-3},
             "int8": {"grid_max": 0.4, "grid_mean": 0.01, "read_max": 0.25}}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.fixture(scope="module")
def scenes():
    return generated_scenes(2801, 4)


@pytest.fixture(scope="module")
def reference() -> PlateDetector:
    return PlateDetector(MODEL, DetectorConfig(runtime="tensorflow"))


@pytest.fixture(scope="module", params=VARIANTS, ids=[f"{r}-{p}" for r, p in VARIANTS])
def fast(request) -> PlateDetector:
    runtime, precision = request.param
    return PlateDetector(MODEL, DetectorConfig(runtime=runtime, precision=precision))


def test_a_fast_runtime_is_installed_and_the_shipped_model_is_exported():
    assert FAST, "neither openvino nor onnxruntime is installed (pip install -e .)"
    for network, source in (("detection", "weights.weights.h5"), ("window", "weights.weights.h5"),
                            (READER, READER)):
        for precision in ("float32", "int8"):
            assert exported_file(MODEL, META, source, network, precision) is not None, (network, precision)
    default = PlateDetector(MODEL, DetectorConfig(prefilter="none"))
    assert all(n.runtime != "tensorflow" for n in (default.networks.detection, default.networks.window,
                                                   *default.readers)), default.device


def test_the_networks_outputs_agree_with_tensorflow(fast, reference, scenes):
    tolerance = TOLERANCE[fast.config.precision]
    grays = [cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) for image, _ in scenes]
    for gray in grays:  # pages of different sizes: the dynamic input shape
        page = gray[None, :, :, None].astype(np.float32)
        ours, theirs = fast.networks.detection(page), reference.networks.detection(page)
        assert ours["presence"].shape == theirs["presence"].shape and ours["box"].shape == theirs["box"].shape
        diff = np.abs(_sigmoid(ours["presence"]) - _sigmoid(theirs["presence"]))
        assert diff.max() <= tolerance["grid_max"] and diff.mean() <= tolerance["grid_mean"], diff.max()
    crops, windows = [], []  # each plate's reader crop and re-read window, as the detector cuts them
    for (_, plates), gray in zip(scenes, grays, strict=True):
        for (x, y, w, h), _ in plates:
            crops.append(reader_crop(gray, (x, y, x + w, y + h))[0])
            windows.append(read_crop_window(gray, (x, y, x + w, y + h))[0])
    crops = np.stack(crops)[..., None].astype(np.float32)
    windows = np.stack(windows)[..., None].astype(np.float32)
    assert len(crops) >= 4
    ours, theirs = fast.readers[0](crops)["text"], reference.readers[0](crops)["text"]
    assert ours.shape == theirs.shape == (len(crops), 32, 37)
    assert np.abs(_softmax(ours) - _softmax(theirs)).max() <= tolerance["read_max"]
    assert (ours.argmax(-1) == theirs.argmax(-1)).mean() >= 0.99  # the best path, column by column
    ours, theirs = fast.networks.window(windows), reference.networks.window(windows)
    for name in ("presence", "box", "text"):
        assert ours[name].shape == theirs[name].shape, name
    assert np.abs(_sigmoid(ours["presence"]) - _sigmoid(theirs["presence"])).max() <= tolerance["read_max"]
    assert np.abs(_softmax(ours["text"]) - _softmax(theirs["text"])).max() <= tolerance["read_max"]


def test_the_same_plates_are_found_and_read(fast, reference, scenes):
    found_by_both = 0
    for image, _ in scenes:
        theirs = {d.text: d.box for d in reference.detect(image)}
        ours = {d.text: d.box for d in fast.detect(image)}
        if fast.config.precision == "float32":
            assert ours.keys() == theirs.keys()
        else:  # int8 may add or drop a doubtful box, never change a plate both find
            assert len(ours.keys() & theirs.keys()) >= len(theirs) - 1, (ours.keys(), theirs.keys())
        for text in ours.keys() & theirs.keys():
            assert ours[text].iou(theirs[text]) > 0.8, text
            found_by_both += 1
    assert found_by_both >= 3


_NO_TENSORFLOW = """
import sys
from anprd.cli import main
status = main(sys.argv[1:])
loaded = sorted(m for m in ("tensorflow", "keras", "anprd.model") if m in sys.modules)
print("LOADED:" + ",".join(loaded))
sys.exit(status)
"""


@pytest.mark.skipif(not FAST, reason="no fast runtime installed")
def test_detect_and_eval_do_not_import_tensorflow(tmp_path, scenes):
    image = tmp_path / "scene.jpg"
    cv2.imwrite(str(image), scenes[0][0])
    x, y, w, h = scenes[0][1][0][0]
    (tmp_path / "labels.tsv").write_text(f"scene.jpg\t{x}\t{y}\t{w}\t{h}\t{scenes[0][1][0][1]}\n")
    for args in (["detect", str(image), "--json"], ["eval", str(tmp_path), "--json"]):
        done = subprocess.run([sys.executable, "-c", _NO_TENSORFLOW, *args], cwd=REPO, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().splitlines()[-1] == "LOADED:", (args, done.stdout[-300:])


@pytest.mark.skipif(not FAST, reason="no fast runtime installed")
def test_the_daemon_modules_do_not_import_tensorflow():
    code = ("import sys, anprd.daemon, anprd.replay, anprd.pipeline, anprd.detector, anprd.runtime; "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def _copy_model(tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(MODEL, copy)
    return copy


@pytest.mark.skipif(not FAST, reason="no fast runtime installed")
def test_a_reader_without_a_current_export_runs_on_tensorflow(tmp_path):
    # what `anprd finetune` leaves: the base folder's files, a new reader's weights next to them
    model = _copy_model(tmp_path)
    meta = json.loads((model / "model.json").read_text())
    shutil.copyfile(model / READER, model / "reader-tuned.weights.h5")
    meta["readers"][0]["weights"] = "reader-tuned.weights.h5"
    (model / "model.json").write_text(json.dumps(meta))
    detector = PlateDetector(model, DetectorConfig(prefilter="none"))
    runtimes = [detector.networks.detection.runtime, detector.networks.window.runtime,
                detector.readers[0].runtime]
    assert runtimes == [FAST[0], FAST[0], "tensorflow"], detector.device
    with pytest.raises(ModelError, match="no current reader-tuned.weights.h5 export.*train.export"):
        PlateDetector(model, DetectorConfig(runtime=FAST[0]))


@pytest.mark.skipif(not FAST, reason="no fast runtime installed")
def test_weights_changed_after_the_export_are_not_served_from_stale_files(tmp_path):
    model = _copy_model(tmp_path)
    data = bytearray((model / READER).read_bytes())
    data[-1] ^= 0xFF  # the hash differs
    (model / READER).write_bytes(bytes(data))
    meta = json.loads((model / "model.json").read_text())
    assert exported_file(model, meta, READER, READER, "float32") is None
    assert exported_file(model, meta, "weights.weights.h5", "detection", "float32") is not None


@pytest.mark.parametrize("runtime", FAST)
def test_a_corrupt_exported_file_is_named(tmp_path, runtime):
    model = _copy_model(tmp_path)
    for name in ("detection.onnx", "detection.int8.onnx"):
        (model / name).write_bytes(b"not an onnx file")
    with pytest.raises(ModelError, match="detection"):
        PlateDetector(model, DetectorConfig(runtime=runtime, prefilter="none"))


def _onnx_weights(path: Path) -> list[str]:
    """The hashes of an ONNX file's initialisers (its weights and constants), sorted."""
    import onnx
    from onnx import numpy_helper

    arrays = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer]
    return sorted(hashlib.sha256(a.tobytes()).hexdigest() + str(a.shape) for a in arrays)


def test_export_writes_current_files_and_records_them(tmp_path):
    pytest.importorskip("tf2onnx")
    model = _copy_model(tmp_path)
    for path in model.glob("*.onnx"):
        path.unlink()
    meta = json.loads((model / "model.json").read_text())
    del meta["exported"]
    (model / "model.json").write_text(json.dumps(meta))
    done = subprocess.run([sys.executable, "-m", "train.export", "--model", str(model), "--precision",
                           "float32"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    meta = json.loads((model / "model.json").read_text())
    record = meta["exported"]
    assert {e["network"] for e in record["files"].values()} == {"detection", "window", READER}
    assert record["command"].startswith("python -m train.export")
    for name, entry in record["files"].items():
        assert entry["precision"] == "float32"
        assert entry["sha256"] == META["exported"]["files"][name]["sha256"]
        # unchanged weights export to the shipped files' weights: the shipped files are what `make
        # export` makes (not byte for byte: tf2onnx's graph optimisations vary from run to run, one
        # export in three or so has one node fewer, with the same weights and outputs)
        assert _onnx_weights(model / name) == _onnx_weights(MODEL / name), name
    exported = PlateDetector(model, DetectorConfig(runtime=FAST[0], precision="float32", prefilter="none"))
    page = np.random.default_rng(3).integers(0, 256, (1, 200, 300, 1)).astype(np.float32)
    shipped = PlateDetector(MODEL, DetectorConfig(runtime=FAST[0], precision="float32", prefilter="none"))
    # the same graph from the same weights: the same grid probabilities (to float rounding; a fresh
    # compile and a cached one may pick different kernels)
    np.testing.assert_allclose(_sigmoid(exported.networks.detection(page)["presence"]),
                               _sigmoid(shipped.networks.detection(page)["presence"]), atol=1e-4)


def test_an_export_that_lost_its_last_squeeze_is_mended_and_a_wrong_one_refused(tmp_path):
    pytest.importorskip("tf2onnx")
    import onnx
    import onnxruntime as ort
    import tf2onnx
    from onnx import numpy_helper

    from train.export import DETECTION_FILE, OPSET, _match_keras, _tf_functions

    function, spec, _ = _tf_functions(MODEL)[0][DETECTION_FILE]
    model, _ = tf2onnx.convert.from_function(function, input_signature=[spec], opset=OPSET)
    graph = model.graph
    last = next(node for node in graph.node if "presence" in node.output)
    if last.op_type == "Squeeze":  # as tf2onnx leaves it some runs: the Squeeze gone, a unit axis left
        producer = next(node for node in graph.node if last.input[0] in node.output)
        producer.output[:] = ["presence" if name == last.input[0] else name for name in producer.output]
        graph.node.remove(last)
        dims = next(output for output in graph.output if output.name == "presence").type.tensor_type.shape.dim
        dims.insert(0, onnx.TensorShapeProto.Dimension(dim_value=1))
    page = np.random.default_rng(5).uniform(0, 255, (1, 80, 160, 1)).astype(np.float32)

    def presence() -> np.ndarray:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(["presence"], {session.get_inputs()[0].name: page})[0]

    assert presence().ndim == 5
    _match_keras(model, function, spec, tmp_path / DETECTION_FILE)
    np.testing.assert_allclose(presence(), function(page)["presence"].numpy(), rtol=1e-3, atol=1e-3)

    weight = max(graph.initializer, key=lambda tensor: numpy_helper.to_array(tensor).size)
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.5, weight.name))
    with pytest.raises(RuntimeError, match=r"detection.onnx: the converted network's \w+ output differs"):
        _match_keras(model, function, spec, tmp_path / DETECTION_FILE)


def test_export_refuses_a_folder_that_is_not_a_model(tmp_path):
    done = subprocess.run([sys.executable, "-m", "train.export", "--model", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == f"{tmp_path / 'model.json'}: missing (not a model folder)"


@pytest.mark.skipif("onnxruntime" not in FAST, reason="onnxruntime not installed")
def test_asking_for_a_gpu_the_runtime_cannot_see_is_an_error():
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the GPU path is checked on GPU hosts")
    with pytest.raises(ModelError, match="detector.device is 'gpu'.*CUDAExecutionProvider"):
        PlateDetector(MODEL, DetectorConfig(runtime="onnxruntime", device="gpu", prefilter="none"))
    cpu = PlateDetector(MODEL, DetectorConfig(runtime="onnxruntime", device="auto", prefilter="none"))
    assert cpu.device == "onnxruntime float32 on CPU (3 of 3 networks)"
