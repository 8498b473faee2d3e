"""Train the plate proposal network that `cascade/proposer.py` runs (`cascade.prefilter: proposer`).

    python -m cascade.train_proposer --run runs/p1 --seed 1 --backgrounds ../shared/data/streets
    python -m cascade.train_proposer --run runs/p1 --export models/proposer-v1

A small fully convolutional network that says, for every 8-pixel step of an image, whether a plate
is centred in the 64x32 window there, at 32-85% of the window's width (or 32-90% of its height):
an octave and more of plate sizes at once, where the detection network's band is 60-80%. Run on
the frame at half the detection network's resolution and on a pyramid of octaves, it costs a few
per cent of the detection network's whole pyramid, and the detection network then looks only
around its hits, at the pyramid levels of the plate widths each hit implies.

1. Windows: the detection network's generator (`train.gen.sample_window`, national styles at
   `--styled`, plates drawn from `PROPOSAL_FILL`'s lower edge up) at 128x64, halved to 64x32 and
   labelled by the proposal rule (`proposal_label`); plus real plates of the `--backgrounds`
   folders that have a boxes.tsv (presence only, their text is unknown), cut at a random fill and
   offset inside the rule, and random crops of those frames clear of every boxed plate.
   Frames whose names start with `--holdout-prefix` (`valid_` in ../shared/data/streets) and the
   first `--bench-frames` 1280x720 frames (the ones `make bench` measures on) are never used.
   ../shared/data/real is evaluation data: never pass it.
2. Training: binary cross-entropy, Adam with a cosine schedule, on windows generated once into the
   run folder (`data/`, reused by a resumed run), the best epoch on a synthetic validation set kept.
3. Calibration: the score threshold is the highest at which `--target-recall` of the plates of
   generated scenes (their own seed) are still inside a proposed region.
4. Measures into proposer.json: proposal recall, regions and time per image on other generated
   scenes and on the held-out frames.

Export writes `proposer.onnx` (ONNX Runtime serves it; no TensorFlow at run time), the Keras
weights it came from, and `proposer.json`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing as mp
import shlex
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from cascade.proposer import (
    PROPOSAL_FILL,
    PROPOSAL_HEIGHT_FILL,
    PROPOSER_FORMAT,
    WINDOW,
    PlateProposer,
    encode_plate,
    proposal_label,
)
from cascade.train_hog import Frame, cut_window, eval_scenes, load_frames, negative_windows

__all__ = ["build_proposer", "main"]

BENCH_SIZE = (720, 1280)  # the bench's street frames (anprd.bench takes the first N of this size)
CHUNK = 2000  # windows per generated file (a resumed run regenerates only what is missing)
# a window's targets: 1 for a proposal (`proposal_label`), then its plate as `encode_plate` gives it
# (zeros for the others, which the box loss ignores)
TARGETS = ("proposal", "centre_x", "centre_y", "log_width", "log_height")


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------
def _halve(window: np.ndarray) -> np.ndarray:
    return cv2.resize(window, WINDOW, interpolation=cv2.INTER_AREA)


def synthetic_chunk(args: tuple[int, int, list[str], float, int]) -> tuple[np.ndarray, np.ndarray]:
    """`count` generated windows (64x32 uint8) and their targets (`TARGETS`), from `seed`."""
    seed, count, folders, styled, index = args
    from train.fonts import available_fonts
    from train.gen import make_backgrounds, sample_window

    rng = np.random.default_rng([seed, 11, index])
    backgrounds = make_backgrounds([Path(f) for f in folders], True, rng, balanced=True)
    fonts = available_fonts()
    images, targets = [], []
    for _ in range(count):
        sample = sample_window(rng, backgrounds, fonts, difficulty=1.0, positive_fraction=0.55,
                               styled=styled, fill_low=PROPOSAL_FILL[0])
        images.append(_halve(sample.image))
        positive = sample.kind != "absent" and proposal_label(sample.box)
        targets.append((1.0, *encode_plate(sample.box)) if positive else (0.0, 0.0, 0.0, 0.0, 0.0))
    return np.stack(images), np.asarray(targets, np.float32)


def real_positive_windows(rng: np.random.Generator, frames: list[Frame], per_plate: int
                          ) -> tuple[list[np.ndarray], list[tuple[float, ...]]]:
    """`per_plate` windows of every boxed plate at least 20 px wide, each at a random fill inside the
    proposal rule and a random offset of the plate's centre within the window's central half."""
    windows, targets = [], []
    win_w, win_h = WINDOW
    for frame in frames:
        if not frame.plates:
            continue
        gray = frame.gray()
        for x0, y0, x1, y1 in frame.plates:
            pw, ph = x1 - x0, y1 - y0
            if pw < 20:
                continue
            for _ in range(per_plate):
                fill = rng.uniform(PROPOSAL_FILL[0] + 0.03, PROPOSAL_FILL[1] - 0.03)
                cw = max(pw / fill, ph / (PROPOSAL_HEIGHT_FILL - 0.05) * win_w / win_h)
                ch = cw * win_h / win_w
                cx = (x0 + x1) / 2 + rng.uniform(-0.22, 0.22) * cw
                cy = (y0 + y1) / 2 + rng.uniform(-0.22, 0.22) * ch
                left, top = cx - cw / 2, cy - ch / 2
                windows.append(cut_window(gray, (left, top, left + cw, top + ch), WINDOW))
                to_window = win_w / cw  # the plate's box in the window's pixels
                in_window = ((x0 - left) * to_window, (y0 - top) * to_window, (x1 - left) * to_window,
                             (y1 - top) * to_window)
                targets.append((1.0, *encode_plate(in_window, win_w, win_h)))
    return windows, targets


def training_frames(folders: list[Path], holdout_prefix: str, bench_frames: int) -> list[Frame]:
    """The frames windows may be cut from: not held out, and not among the bench's street frames."""
    frames = load_frames(folders, holdout_prefix)
    bench: set[Path] = set()
    for folder in folders:  # the bench's rule: the first N sorted 1280x720 frames of a folder
        taken = 0
        for frame in sorted((f for f in frames if f.path.parent == folder), key=lambda f: f.path.name):
            if taken == bench_frames:
                break
            if cv2.imread(str(frame.path), cv2.IMREAD_REDUCED_GRAYSCALE_8).shape == (90, 160):
                bench.add(frame.path)
                taken += 1
    return [f for f in frames if not f.held_out and f.path not in bench]


def generate(run: Path, seed: int, windows: int, folders: list[Path], styled: float, name: str,
             workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """`windows` generated windows in chunks under run/data/ (existing chunks are reused)."""
    from tqdm import tqdm

    data = run / "data"
    data.mkdir(parents=True, exist_ok=True)
    chunks = math.ceil(windows / CHUNK)
    missing = [i for i in range(chunks) if not (data / f"{name}-{i:04d}.npz").is_file()]
    jobs = [(seed, CHUNK, [str(f) for f in folders], styled, i) for i in missing]
    with mp.get_context("spawn").Pool(workers) as pool:
        for i, (images, targets) in tqdm(zip(missing, pool.imap(synthetic_chunk, jobs), strict=True),
                                         total=len(jobs),
                                         desc=f"{name} windows", unit="chunk", disable=not jobs):
            np.savez(data / f"{name}-{i:04d}.npz", images=images, targets=targets)
    parts = [np.load(data / f"{name}-{i:04d}.npz") for i in range(chunks)]
    return (np.concatenate([p["images"] for p in parts])[:windows],
            np.concatenate([p["targets"] for p in parts])[:windows])


# --------------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------------
def build_proposer(stem: int = 16, blocks: tuple[tuple[int, int], ...] = ((32, 2), (48, 2), (64, 1), (64, 1)),
                   hidden: int = 64):
    """The proposal network: a stride-2 stem and depthwise-separable blocks to stride 8, then one
    window-sized depthwise layer (4x8 cells: the 32x64 window) and a 1x1 hidden layer. Per 8-pixel
    step of any input size (1x1 for one window): `proposal`, one logit, and `plate`, the plate's
    centre and size as `encode_plate` gives them."""
    from tensorflow import keras
    from tensorflow.keras import layers

    from anprd.model import _separable

    image = keras.Input((None, None, 1), name="image")
    x = layers.Rescaling(1 / 255.0, offset=-0.5, name="rescale")(image)
    x = layers.Conv2D(stem, 3, strides=2, padding="same", use_bias=False, name="stem")(x)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for i, (channels, stride) in enumerate(blocks):
        for layer in _separable(channels, (stride, stride), f"block{i}"):
            x = layer(x)
    x = layers.DepthwiseConv2D((WINDOW[1] // 8, WINDOW[0] // 8), padding="valid", name="window")(x)
    x = layers.Conv2D(hidden, 1, activation="relu", name="hidden")(x)
    return keras.Model(image, {"proposal": layers.Conv2D(1, 1, name="proposal")(x),
                               "plate": layers.Conv2D(4, 1, name="plate")(x)}, name="proposer")


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------
def _plate_loss(y_true, y_pred):
    """Huber loss of the plate's centre and size, on proposals only (y_true's first channel)."""
    import tensorflow as tf

    mask = y_true[..., :1]
    error = tf.keras.losses.huber(y_true[..., 1:] * mask, y_pred * mask, delta=0.1)
    return error * tf.reduce_mean(mask, axis=-1) / 0.5  # about the scale of the proposal loss


def _proposal_loss(y_true, y_pred):
    import tensorflow as tf

    return tf.keras.losses.binary_crossentropy(y_true[..., :1], y_pred, from_logits=True)


def plate_errors(model, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """|predicted - true| centre x, centre y and log width of the validation proposals (N x 3)."""
    plate = model.predict(images[..., None], batch_size=1024, verbose=0)["plate"].reshape(-1, 4)
    positive = targets[:, 0] > 0.5
    return np.abs(plate[positive, :3] - targets[positive, 1:4])


def validation_figures(model, images: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Recall at 1% false positives, and the 99th percentile of the errors of the plate's centre
    (window widths and heights) and log width, over the validation proposals."""
    out = model.predict(images[..., None], batch_size=1024, verbose=0)
    scores, plate = out["proposal"].reshape(-1), out["plate"].reshape(-1, 4)
    positive = targets[:, 0] > 0.5
    cut = np.sort(scores[~positive])[int(0.99 * (np.sum(~positive) - 1))]
    error = np.abs(plate[positive] - targets[positive, 1:])
    return {"recall_at_1pct_fp": round(float(np.mean(scores[positive] > cut)), 4),
            "centre_x_error_p99": round(float(np.percentile(error[:, 0], 99)), 4),
            "centre_y_error_p99": round(float(np.percentile(error[:, 1], 99)), 4),
            "log_width_error_p99": round(float(np.percentile(error[:, 2], 99)), 4)}


def train(run: Path, images: np.ndarray, targets: np.ndarray, val: tuple[np.ndarray, np.ndarray],
          epochs: int, lr: float, batch: int, seed: int, net: dict) -> dict[str, float]:
    """Fit the network, keeping the epoch with the best validation recall at 1% false positives."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    model = build_proposer(**net)
    steps = epochs * math.ceil(len(images) / batch)
    schedule = tf.keras.optimizers.schedules.CosineDecay(lr, steps, alpha=0.05)
    model.compile(optimizer=tf.keras.optimizers.Adam(schedule),
                  loss={"proposal": _proposal_loss, "plate": _plate_loss})
    y = targets.reshape(-1, 1, 1, len(TARGETS))
    best: dict[str, float] = {"epoch": -1, "recall_at_1pct_fp": -1.0}
    for epoch in range(epochs):
        history = model.fit(images[..., None], {"proposal": y, "plate": y}, batch_size=batch, epochs=1,
                            shuffle=True, verbose=2)
        figures = validation_figures(model, *val)
        print(f"epoch {epoch + 1}/{epochs}: loss {history.history['loss'][-1]:.4f}, validation {figures}",
              flush=True)
        if figures["recall_at_1pct_fp"] > best["recall_at_1pct_fp"]:
            best = {"epoch": epoch + 1, **figures, "loss": round(float(history.history["loss"][-1]), 4)}
            model.save_weights(run / "best.weights.h5")
    return best


# --------------------------------------------------------------------------------------------------
# Calibration, measures and export
# --------------------------------------------------------------------------------------------------
def _plate_scores(proposer: PlateProposer, scenes: list[tuple[np.ndarray, list]]) -> np.ndarray:
    """For each plate (at least the narrowest searched for), the best score of a window whose search
    holds the plate's centre at a width band holding its width: the threshold under which the plate
    is still proposed."""
    best = []
    for gray, plates in scenes:
        boxes, widths, scores = proposer.searches(gray, threshold=-1e9 - proposer.calibrated)
        for x0, y0, x1, y1 in plates:
            if x1 - x0 < proposer.min_plate_width:
                continue
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            hit = ((boxes[:, 0] <= cx) & (boxes[:, 1] <= cy) & (boxes[:, 2] >= cx) & (boxes[:, 3] >= cy)
                   & (widths[:, 0] <= x1 - x0) & (widths[:, 1] >= x1 - x0))
            best.append(float(scores[hit].max()) if hit.any() else -1e9)
    return np.asarray(best)


def measure(proposer: PlateProposer, images: list[tuple[np.ndarray, list]]) -> dict[str, float | int]:
    """Held-out figures: plates (at least the narrowest searched for) whose centre and width a search
    above the threshold holds, regions and the share of the image they cover, and time per image."""
    scores = _plate_scores(proposer, images)
    regions = area = 0.0
    ms = []
    for gray, _ in images:
        start = time.process_time()
        found = proposer.regions(gray)
        ms.append((time.process_time() - start) * 1000)
        regions += len(found)
        area += sum((r.box[2] - r.box[0]) * (r.box[3] - r.box[1]) for r in found) / gray.size
    return {"images": len(images), "plates": len(scores),
            "recall": round(float(np.mean(scores > proposer.calibrated)), 4) if len(scores) else 0.0,
            "regions_per_image": round(regions / len(images), 2),
            "region_area_fraction": round(area / len(images), 4),
            "cpu_ms_median": round(float(np.median(ms)), 1)}


def calibrate(proposer: PlateProposer, scenes: list, target_recall: float) -> float:
    """The score threshold at which `target_recall` of the scenes' plates are still proposed."""
    best = np.sort(_plate_scores(proposer, scenes))
    return float(best[int(math.floor((1 - target_recall) * (len(best) - 1)))])


def _net(meta: dict) -> dict:
    """build_proposer's arguments recorded in a run.json (the defaults where none are)."""
    net = dict(meta.get("net", {}))
    if "blocks" in net:
        net["blocks"] = tuple(tuple(b) for b in net["blocks"])
    return net


def _blocks(text: str) -> tuple[tuple[int, int], ...]:
    """'32:2,48:2,64:1' -> ((32, 2), (48, 2), (64, 1)): channels and stride of each block."""
    try:
        blocks = tuple((int(c), int(s)) for c, s in (part.split(":") for part in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CHANNELS:STRIDE,... got {text!r}") from None
    if math.prod(s for _, s in blocks) != 4:
        raise argparse.ArgumentTypeError(f"the blocks' strides must multiply to 4 (8 with the stem): {text}")
    return blocks


def export(run: Path, out: Path) -> None:
    """proposer.onnx from the run's best weights, the weights, and proposer.json."""
    import shutil

    import onnx
    import tensorflow as tf
    import tf2onnx

    from train.export import OPSET

    meta = json.loads((run / "run.json").read_text())
    model = build_proposer(**_net(meta))
    model.load_weights(run / "best.weights.h5")
    out.mkdir(parents=True, exist_ok=True)
    spec = tf.TensorSpec((1, None, None, 1), tf.float32, name="image")
    function = tf.function(lambda image: model(image, training=False))
    onnx_model, _ = tf2onnx.convert.from_function(function, input_signature=[spec], opset=OPSET)
    onnx.save(onnx_model, out / "proposer.onnx")
    shutil.copyfile(run / "best.weights.h5", out / "proposer.weights.h5")
    meta["onnx_sha256"] = hashlib.sha256((out / "proposer.onnx").read_bytes()).hexdigest()
    (out / "proposer.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {out}/proposer.onnx, proposer.weights.h5, proposer.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cascade.train_proposer",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="run folder (data, weights, run.json)")
    parser.add_argument("--export", type=Path, help="write the model folder from a finished run and stop")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--windows", type=int, default=160_000, help="generated training windows")
    parser.add_argument("--val-windows", type=int, default=8000)
    parser.add_argument("--real-per-plate", type=int, default=12, help="windows per boxed real plate")
    parser.add_argument("--real-negatives", type=int, default=20_000,
                        help="crops of the frames clear of plates")
    parser.add_argument("--backgrounds", type=Path, action="append", default=[])
    parser.add_argument("--holdout-prefix", default="valid_")
    parser.add_argument("--bench-frames", type=int, default=30,
                        help="the first 1280x720 frames, kept for make bench")
    parser.add_argument("--styled", type=float, default=0.6, help="share of national plate styles")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--stem", type=int, default=16, help="channels of the stride-2 stem")
    parser.add_argument("--blocks", type=_blocks, default=((32, 2), (48, 2), (64, 1), (64, 1)),
                        help="depthwise-separable blocks, CHANNELS:STRIDE,...")
    parser.add_argument("--hidden", type=int, default=64, help="channels of the 1x1 layer after the window")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--target-recall", type=float, default=0.995)
    parser.add_argument("--margin-quantile", type=float, default=0.9,
                        help="search margins: this quantile of the validation windows' plate errors")
    parser.add_argument("--recalibrate", action="store_true",
                        help="calibrate and measure the run's trained weights again, without training")
    parser.add_argument("--calibration-scenes", type=int, default=80)
    parser.add_argument("--eval-scenes", type=int, default=40)
    args = parser.parse_args(argv)

    if args.export:
        export(args.run, args.export)
        return 0
    from anprd.runtime import import_tensorflow

    import_tensorflow()
    started = time.time()
    args.run.mkdir(parents=True, exist_ok=True)
    val = generate(args.run, args.seed + 1000, args.val_windows, args.backgrounds, args.styled, "val")
    if args.recalibrate:  # the run's trained weights, calibrated again (other margins or recall)
        previous = json.loads((args.run / "run.json").read_text())
        best, net = previous["training"], _net(previous)
    else:
        net = {"stem": args.stem, "blocks": args.blocks, "hidden": args.hidden}
        rng = np.random.default_rng([args.seed, 1])
        frames = training_frames(args.backgrounds, args.holdout_prefix, args.bench_frames)
        images, targets = generate(args.run, args.seed, args.windows, args.backgrounds, args.styled, "train")
        real, real_targets = real_positive_windows(rng, frames, args.real_per_plate) if frames else ([], [])
        clear = negative_windows(rng, args.real_negatives, frames, WINDOW) if frames else []
        print(f"windows: {len(images)} generated ({int(targets[:, 0].sum())} proposals), {len(real)} real "
              f"plates, {len(clear)} real clear crops; {len(frames)} frames", flush=True)
        if real or clear:
            images = np.concatenate([images, np.stack(real + clear)])
            targets = np.concatenate([targets, np.asarray(real_targets, np.float32).reshape(-1, len(TARGETS)),
                                      np.zeros((len(clear), len(TARGETS)), np.float32)])
        best = train(args.run, images, targets, val, args.epochs, args.lr, args.batch, args.seed, net)

    # the search around a predicted plate: a quantile of its errors on the validation windows
    model = build_proposer(**net)
    model.load_weights(args.run / "best.weights.h5")
    errors = plate_errors(model, *val)
    meta = {"format": PROPOSER_FORMAT, "window": list(WINDOW), "fill": list(PROPOSAL_FILL),
            "height_fill": PROPOSAL_HEIGHT_FILL, "threshold": 0.0,
            "margins": {key: round(float(np.quantile(errors[:, i], args.margin_quantile)), 4)
                        for i, key in enumerate(("centre_x", "centre_y", "log_width"))},
            "margin_quantile": args.margin_quantile,
            "command": "python -m cascade.train_proposer "
            + shlex.join(argv if argv is not None else sys.argv[1:]),
            "seed": args.seed, "net": {**net, "blocks": [list(b) for b in net["blocks"]]}, "training": best}
    # calibrate and measure through the inference path, from a temporary export
    (args.run / "run.json").write_text(json.dumps(meta, indent=2) + "\n")
    export(args.run, args.run / "model")
    proposer = PlateProposer(args.run / "model")
    folders = args.backgrounds
    threshold = calibrate(proposer, eval_scenes(args.seed + 2000, args.calibration_scenes, folders),
                          args.target_recall)
    meta["threshold"] = round(threshold, 4)
    (args.run / "run.json").write_text(json.dumps(meta, indent=2) + "\n")
    export(args.run, args.run / "model")
    proposer = PlateProposer(args.run / "model")
    scenes = eval_scenes(args.seed + 3000, args.eval_scenes, folders)
    held_out = [(f.gray(), f.plates) for f in load_frames(folders, args.holdout_prefix) if f.held_out]
    meta["measured"] = {"generated_scenes": measure(proposer, scenes)}
    if held_out:
        meta["measured"]["held_out_frames"] = measure(proposer, held_out)
    meta["train_minutes"] = round((time.time() - started) / 60, 1)
    (args.run / "run.json").write_text(json.dumps(meta, indent=2) + "\n")
    export(args.run, args.run / "model")  # with the measures
    print(json.dumps(meta["measured"], indent=2))
    print(f"threshold {threshold:.3f}; export with: python -m cascade.train_proposer --run {args.run} "
          f"--export models/proposer-v1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
