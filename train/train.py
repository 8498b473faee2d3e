"""Train the plate network on windows generated on the fly, with checkpoints, resume and export.

    python -m train.train --run runs/v1 --steps 5000 --seed 1 --backgrounds ../shared/data/streets
    python -m train.train --run runs/v1 --resume            # continue a stopped run
    python -m train.train --run runs/v2 --init-from runs/v1 --steps 7000 --lr 2e-3 --seed 2  # stage 2
    python -m train.train --run runs/v2 --export models/my-model   # write the best weights + metadata

The plate reader that joins the exported folder is trained by train.train_reader.

Worker processes render batches into a queue. When they fall behind, the step re-uses a recent batch
from a small ring buffer instead of waiting, so the 2 cores are never idle; how often that happened is
logged as `fresh`. A curriculum raises the degradation strength from clean to full over the first 40%
of the steps. Validation runs on a fixed synthetic set (its own seed) and keeps the best weights.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import multiprocessing as mp
import os
import queue
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from anprd.ctc import ALPHABET, BLANK
from anprd.errors import AnprdError

__all__ = ["main"]

MAX_LABEL = 10
TEXT_COLUMNS = 32
COLUMN_WIDTH = 128 / TEXT_COLUMNS
CHAR_INDEX = {c: i for i, c in enumerate(ALPHABET)}


# --------------------------------------------------------------------------------------------------
# Data: batches from worker processes
# --------------------------------------------------------------------------------------------------
def make_batch(samples: list) -> dict[str, np.ndarray]:
    n = len(samples)
    batch = {
        "image": np.stack([s.image for s in samples])[..., None],
        "present": np.array([s.present for s in samples], np.float32),
        "box": np.zeros((n, 4), np.float32),
        "labels": np.zeros((n, MAX_LABEL), np.int32),
        "label_len": np.zeros((n,), np.int32),
        "read": np.zeros((n,), np.float32),  # 1 where the text is learned (centred positives)
        "columns": np.full((n, TEXT_COLUMNS), BLANK, np.int32),  # character at its centre column
        "columns_ok": np.zeros((n,), np.float32),
    }
    for i, s in enumerate(samples):
        if s.present:
            x0, y0, x1, y1 = s.box
            batch["box"][i] = (x0 / 128, y0 / 64, x1 / 128, y1 / 64)
            codes = [CHAR_INDEX[c] for c in s.text[:MAX_LABEL]]
            batch["labels"][i, : len(codes)] = codes
            batch["label_len"][i] = len(codes)
            batch["read"][i] = float(s.centred)
            cols = [int(np.clip(x / COLUMN_WIDTH, 0, TEXT_COLUMNS - 1)) for x in s.char_x[:MAX_LABEL]]
            # two characters in one column (tiny text) cannot be taught per column; CTC still applies
            if s.centred and len(set(cols)) == len(cols) == len(codes):
                batch["columns"][i, cols] = codes
                batch["columns_ok"][i] = 1.0
    return batch


def generate_batches(n_samples: int, seed: int, backgrounds: list[str], difficulty: float,
                     batch_size: int = 256, styled: float = 0.0) -> dict[str, np.ndarray]:
    """A fixed set (validation/test) generated in this process."""
    from train.fonts import available_fonts
    from train.gen import make_backgrounds, sample_window

    rng = np.random.default_rng(seed)
    fonts = available_fonts()
    bgs = make_backgrounds([Path(b) for b in backgrounds], True, rng)
    samples = [sample_window(rng, bgs, fonts, difficulty, styled=styled) for _ in range(n_samples)]
    return make_batch(samples)


def _worker(worker_id: int, seed: int, backgrounds: list[str], batch_size: int, out: mp.Queue,
            difficulty: mp.Value, stop: mp.Event, task: str, balanced: bool, styled: float) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    import cv2

    cv2.setNumThreads(1)
    from train.fonts import available_fonts
    from train.gen import make_backgrounds, sample_read_crop, sample_window

    rng = np.random.default_rng([seed, worker_id])
    fonts = available_fonts()
    bgs = make_backgrounds([Path(b) for b in backgrounds], True, rng, balanced)
    if task == "reader":
        from train.train_reader import make_reader_batch

        sample, batcher = sample_read_crop, make_reader_batch
    else:
        sample, batcher = sample_window, make_batch
    while not stop.is_set():
        batch = batcher([sample(rng, bgs, fonts, difficulty.value, styled=styled) for _ in range(batch_size)])
        while not stop.is_set():
            try:
                out.put(batch, timeout=0.5)
                break
            except queue.Full:
                continue


class BatchSource:
    """Fresh batches from workers when ready, else a recent one from the ring buffer."""

    def __init__(self, workers: int, seed: int, backgrounds: list[str], batch_size: int,
                 ring_size: int = 48, task: str = "window", balanced: bool = False,
                 styled: float = 0.0) -> None:
        ctx = mp.get_context("spawn")  # never fork a process that has TensorFlow loaded
        self.queue: mp.Queue = ctx.Queue(maxsize=4)
        self.difficulty = ctx.Value("d", 0.0)
        self.stop_event = ctx.Event()
        self.procs = [ctx.Process(target=_worker, daemon=True,
                                  args=(i, seed, backgrounds, batch_size, self.queue, self.difficulty,
                                        self.stop_event, task, balanced, styled))
                      for i in range(workers)]
        for p in self.procs:
            p.start()
        self.ring: list[dict[str, np.ndarray]] = []
        self.ring_size = ring_size
        self.rng = np.random.default_rng(seed)
        self.fresh = 0
        self.reused = 0

    def next(self) -> dict[str, np.ndarray]:
        try:
            batch = self.queue.get(timeout=None if len(self.ring) < 4 else 0.001)
        except queue.Empty:
            self.reused += 1
            return self.ring[self.rng.integers(len(self.ring))]
        self.fresh += 1
        if len(self.ring) < self.ring_size:
            self.ring.append(batch)
        else:
            self.ring[self.rng.integers(self.ring_size)] = batch
        return batch

    def close(self) -> None:
        self.stop_event.set()
        for p in self.procs:
            p.join(timeout=3)
            if p.is_alive():
                p.terminate()


# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------
def greedy_decode(logits: np.ndarray) -> list[str]:
    """Best path: argmax per column, merge repeats, drop blanks."""
    best = logits.argmax(axis=-1)
    out = []
    for row in best:
        chars, prev = [], -1
        for k in row:
            if k != prev and k != BLANK:
                chars.append(ALPHABET[k])
            prev = k
        out.append("".join(chars))
    return out


def labels_to_text(labels: np.ndarray, lengths: np.ndarray) -> list[str]:
    return ["".join(ALPHABET[k] for k in row[:n]) for row, n in zip(labels, lengths, strict=True)]


def evaluate(predict, data: dict[str, np.ndarray], batch_size: int = 256) -> dict[str, float]:
    presence, texts = [], []
    for i in range(0, len(data["image"]), batch_size):
        out = predict(data["image"][i: i + batch_size].astype(np.float32))
        presence.append(out["presence"].numpy()[:, 0])
        texts += greedy_decode(out["text"].numpy())
    presence = np.concatenate(presence)
    pos = data["present"] > 0.5
    read = data["read"] > 0.5  # reading is scored on crops framed as the detector frames them
    truth = labels_to_text(data["labels"], data["label_len"])
    scored = [(t, p) for t, p, m in zip(truth, texts, read, strict=True) if m]
    reads = [t == p for t, p in scored]
    char_hits = sum(sum(a == b for a, b in zip(t, p, strict=False)) for t, p in scored)
    char_total = sum(max(len(t), len(p)) for t, p in scored)
    predicted = presence > 0.0  # logit 0 = probability 0.5
    return {
        "presence_acc": float((predicted == pos).mean()),
        "presence_fp_at_0.99": float((presence[~pos] > 4.6).mean()),
        "presence_recall_at_0.99": float((presence[pos] > 4.6).mean()),
        "read_acc": float(np.mean(reads)),
        "char_acc": char_hits / max(1, char_total),
    }


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------
def build_training(net, total_steps: int, lr: float):
    import keras
    import tensorflow as tf

    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=total_steps, alpha=0.03, warmup_target=lr, warmup_steps=min(800, total_steps // 10))
    optimizer = keras.optimizers.Adam(schedule, clipnorm=5.0)
    model = net.window_model

    @tf.function(reduce_retracing=True)
    def train_step(image, present, box, labels, label_len, read, columns, columns_ok):
        with tf.GradientTape() as tape:
            out = model(tf.cast(image, tf.float32), training=True)
            pres_logit = out["presence"][:, 0]
            presence_loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(present, pres_logit))
            weight = present / tf.maximum(tf.reduce_sum(present), 1.0)
            box_loss = tf.reduce_sum(tf.reduce_sum(tf.abs(box - out["box"]), axis=1) * weight)
            safe_len = tf.maximum(label_len, 1)  # negatives carry no text; their CTC term is masked
            ctc = tf.nn.ctc_loss(labels=labels, logits=out["text"], label_length=safe_len,
                                 logit_length=tf.fill([tf.shape(image)[0]], out["text"].shape[1]),
                                 logits_time_major=False, blank_index=BLANK)
            read_weight = read / tf.maximum(tf.reduce_sum(read), 1.0)
            ctc_loss = tf.reduce_sum(ctc * read_weight)
            # dense per-column targets from the generator break CTC's long all-blank plateau
            column_ce = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(columns, out["text"]), axis=1)
            column_loss = tf.reduce_sum(column_ce * columns_ok / tf.maximum(tf.reduce_sum(columns_ok), 1.0))
            loss = presence_loss + 0.1 * ctc_loss + column_loss + 5.0 * box_loss
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss, presence_loss, ctc_loss, column_loss, box_loss

    @tf.function(reduce_retracing=True)
    def predict(image):
        return model(image, training=False)

    return optimizer, train_step, predict


def save_state(run: Path, model, optimizer, step: int, best: dict, name: str = "last") -> None:
    """Write `model`'s weights as `name`; "last" also keeps the optimizer and the step for --resume."""
    tmp = run / f"{name}.tmp.weights.h5"
    model.save_weights(tmp)
    os.replace(tmp, run / f"{name}.weights.h5")
    if name == "last":
        opt_vars = {f"v{i}": v.numpy() for i, v in enumerate(optimizer.variables)}
        with open(run / "optimizer.tmp.npz", "wb") as fh:
            np.savez(fh, **opt_vars)
        os.replace(run / "optimizer.tmp.npz", run / "optimizer.npz")
        (run / "state.json").write_text(json.dumps({"step": step, "best": best}, indent=1))


def training_minutes(run: Path) -> float:
    """Wall-clock training minutes of a run, summed over its resumed segments (the log's time
    column restarts at each resume)."""
    with open(run / "log.csv", newline="") as fh:
        times = [float(row["time"]) for row in csv.DictReader(fh)]
    if not times:
        return 0.0
    segment_ends = [t for t, after in zip(times, [*times[1:], -1.0], strict=True) if after < t]
    return round(sum(segment_ends) / 60, 1)


def training_stages(run: Path) -> list[dict]:
    """The commands that made a run's weights, first stage first (following --init-from)."""
    args = json.loads((run / "args.json").read_text())
    state = json.loads((run / "state.json").read_text())
    stage = {"command": args["command"], "seed": args["seed"], "steps": state["step"],
             "minutes": training_minutes(run)}
    init_from = args.get("init_from")
    if init_from and Path(init_from).is_dir():
        return [*training_stages(Path(init_from)), stage]
    exported = Path(init_from).parent / "model.json" if init_from else None
    if exported and exported.is_file():  # an exported model's weights: its model.json lists their stages
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            meta = json.loads(exported.read_text())
            # a plate reader's weights are listed under "readers", each with its own stages
            reader = next((r for r in meta.get("readers", []) if r.get("weights") == Path(init_from).name),
                          None)
            return [*(reader or meta)["stages"], stage]
    return [stage]


def run_record(run: Path) -> dict:
    """What made a run's best weights, for the exported model.json: network, command, seed, steps,
    batch size, validation figures and set, backgrounds."""
    args = json.loads((run / "args.json").read_text())
    state = json.loads((run / "state.json").read_text())
    return {
        "net": args["net"],
        "command": args["command"],
        "seed": args["seed"],
        "steps": state["best"].get("step"),
        "steps_trained": state["step"],
        "batch_size": args["batch_size"],
        "validation": state["best"],
        "validation_set": {"count": args["val_count"], "seed": args["val_seed"], "difficulty": 1.0},
        "backgrounds": args["backgrounds"],
        "balance_backgrounds": args.get("balance_backgrounds", False),
        "styled": args.get("styled", 0.0),
    }


class ExportError(AnprdError):
    """A run that cannot be exported (not trained yet, no detector folder to join); one line."""


def best_weights(run: Path) -> Path:
    weights = run / "best.weights.h5"
    if not weights.is_file():
        raise ExportError(f"{weights} not found: {run} has not been trained (or is not a run folder)")
    return weights


def export(run: Path, out_dir: Path) -> None:
    """Copy the best weights and write the metadata the detector needs."""
    import shutil

    weights = best_weights(run)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, out_dir / "weights.weights.h5")
    record = run_record(run)
    meta = {
        "format": "anprd-plate-net/1",
        "alphabet": ALPHABET,
        "blank_index": BLANK,
        "max_length": MAX_LABEL,
        "window": {"width": 128, "height": 64, "channels": 1},
        "grid_stride": 8,
        "text_columns": 32,
        **record,
        "stages": training_stages(run),
    }
    with contextlib.suppress(OSError, ValueError, KeyError):  # the folder's readers stay
        meta["readers"] = json.loads((out_dir / "model.json").read_text())["readers"]
    (out_dir / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"exported {weights} -> {out_dir} (val {record['validation']})")


# --------------------------------------------------------------------------------------------------
# The run: arguments, resume and the loop, shared with train.train_reader
# --------------------------------------------------------------------------------------------------
SAVED_ARGS = ("steps", "batch_size", "lr", "seed", "workers", "val_count", "val_seed", "val_every")


def add_run_arguments(parser: argparse.ArgumentParser, steps: int, batch_size: int, lr: float, seed: int,
                      val_seed: int, val_every: int) -> None:
    """The options every training run has (folder, schedule, data, validation, resume, export)."""
    parser.add_argument("--run", type=Path, required=True, help="run folder (checkpoints, logs)")
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--seed", type=int, default=seed)
    parser.add_argument("--workers", type=int, default=1, help="generator processes")
    parser.add_argument("--backgrounds", type=Path, action="append", default=[],
                        help="extra background folders (the scikit-image photos are always used)")
    parser.add_argument("--balance-backgrounds", action="store_true",
                        help="draw training backgrounds from each folder equally often (the bundled photos "
                             "as often as --backgrounds'), not in proportion to their sizes; validation "
                             "keeps the proportional draw")
    parser.add_argument("--styled", type=float, default=0.0,
                        help="fraction of plates drawn in national styles (anprd/styles, train.plates) in "
                             "training and validation; the rest are the three generic families")
    parser.add_argument("--val-count", type=int, default=2000)
    parser.add_argument("--val-seed", type=int, default=val_seed)
    parser.add_argument("--val-every", type=int, default=val_every)
    parser.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    parser.add_argument("--max-minutes", type=float, help="stop (with a checkpoint) after this long")
    parser.add_argument("--init-from", type=Path,
                        help="start from these weights (a run folder's best, or a .weights.h5 file) at full "
                             "difficulty: a second stage with a fresh learning-rate schedule")


def initialise_from(model, init_from: Path) -> None:
    """Load a previous stage's weights: a run folder's best, or a .weights.h5 file."""
    weights = init_from / "best.weights.h5" if init_from.is_dir() else init_from
    model.load_weights(weights)
    print(f"initialised from {weights}")


def export_or_refuse(args: argparse.Namespace, export: Callable[[Path, Path], None], prog: str
                     ) -> int | None:
    """Handle --export, and a run folder already used without --resume: the exit status, or None
    when the run should train."""
    if args.export:
        try:
            export(args.run, args.export)
        except (ExportError, OSError) as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            return 2
        return 0
    if not args.resume and (args.run / "state.json").exists():
        print(f"{prog}: {args.run} already has a run; use --resume or another --run", file=sys.stderr)
        return 2
    return None


def start_run(args: argparse.Namespace, prog: str, argv: list[str] | None, net: dict) -> dict:
    """Create the run folder and its args.json, or on --resume reload the saved arguments into `args`.
    Returns the saved arguments (the network's description is under "net")."""
    run = args.run
    if args.resume:
        saved = json.loads((run / "args.json").read_text())
        for key in SAVED_ARGS:
            setattr(args, key, saved[key])
        args.backgrounds = [Path(b) for b in saved["backgrounds"]]
        args.balance_backgrounds = saved.get("balance_backgrounds", False)  # runs from before the option
        args.styled = saved.get("styled", 0.0)
        args.init_from = Path(saved["init_from"]) if saved.get("init_from") else None
        return saved
    run.mkdir(parents=True, exist_ok=True)
    saved = {key: getattr(args, key) for key in SAVED_ARGS}
    saved |= {"backgrounds": [str(b) for b in args.backgrounds],
              "balance_backgrounds": args.balance_backgrounds, "styled": args.styled,
              "init_from": str(args.init_from) if args.init_from else None, "net": net,
              "command": f"python -m {prog} " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))}
    (run / "args.json").write_text(json.dumps(saved, indent=1))
    return saved


def starting_point(args: argparse.Namespace, model, optimizer) -> tuple[int, dict]:
    """(step, best metrics) a run starts from: its last checkpoint on --resume, else step 0 from
    the --init-from weights (if any) or from scratch."""
    if args.resume:
        return restore(args.run, model, optimizer)
    if args.init_from:
        initialise_from(model, args.init_from)
    return 0, {"read_acc": -1.0}


def restore(run: Path, model, optimizer) -> tuple[int, dict]:
    """Load the last checkpoint's weights and optimizer state; returns (step, best metrics)."""
    state = json.loads((run / "state.json").read_text())
    model.load_weights(run / "last.weights.h5")
    optimizer.build(model.trainable_variables)
    saved_vars = np.load(run / "optimizer.npz")
    for i, v in enumerate(optimizer.variables):
        v.assign(saved_vars[f"v{i}"])
    print(f"resumed {run} at step {state['step']}")
    return state["step"], state["best"]


def cached_validation(run: Path, make) -> dict[str, np.ndarray]:
    """The run's fixed validation set: made once by `make()`, then read from run/val.npz."""
    val_path = run / "val.npz"
    if val_path.exists():
        return dict(np.load(val_path))
    val = make()
    np.savez_compressed(val_path, **val)
    return val


def train_loop(args: argparse.Namespace, model, optimizer, source: BatchSource, step: int, best: dict,
               train_on_batch, loss_names: list[str], evaluate_now, metric_names: list[str],
               difficulty_at) -> None:
    """Steps until args.steps, validating every args.val_every steps: a log.csv row, the "last"
    checkpoint, and "best" when read accuracy did not fall. Stops with a checkpoint on Ctrl-C or
    after args.max_minutes.

    train_on_batch(batch) -> losses (in loss_names order); evaluate_now() -> metrics (metric_names,
    "read_acc" among them); difficulty_at(step) -> the generator's degradation strength.
    """
    from tqdm import tqdm

    run = args.run
    log_path = run / "log.csv"
    new_log = not log_path.exists()
    log = open(log_path, "a", newline="")  # noqa: SIM115 (open for the whole run, closed in finally)
    writer = csv.writer(log)
    if new_log:
        writer.writerow(["step", "time", *loss_names, "difficulty", "fresh", *metric_names])
    started = time.time()
    bar = tqdm(total=args.steps, initial=step, dynamic_ncols=True, mininterval=5)
    losses: list[np.ndarray] = []
    try:
        while step < args.steps:
            source.difficulty.value = difficulty_at(step)
            losses.append(np.array([float(r) for r in train_on_batch(source.next())]))
            step += 1
            bar.update(1)
            fresh = source.fresh / max(1, source.fresh + source.reused)
            if step % 50 == 0:
                mean = np.mean(losses[-50:], axis=0)
                bar.set_postfix({**{name: f"{v:.3f}" for name, v in zip(loss_names, mean, strict=True)},
                                 "fresh": f"{fresh:.2f}"})
            stop_now = args.max_minutes is not None and time.time() - started > args.max_minutes * 60
            if step % args.val_every == 0 or step == args.steps or stop_now:
                metrics = evaluate_now()
                mean = np.mean(losses[-args.val_every:], axis=0)
                writer.writerow([step, round(time.time() - started), *np.round(mean, 4),
                                 round(source.difficulty.value, 3), round(fresh, 3),
                                 *(round(metrics[name], 4) for name in metric_names)])
                log.flush()
                bar.write(f"step {step}: " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
                if metrics["read_acc"] >= best["read_acc"]:
                    best = {**metrics, "step": step}
                    save_state(run, model, optimizer, step, best, "best")
                save_state(run, model, optimizer, step, best, "last")
            if stop_now:
                bar.write(f"stopping after {args.max_minutes} minutes; resume with --resume")
                break
    except KeyboardInterrupt:
        save_state(run, model, optimizer, step, best, "last")
        bar.write(f"interrupted at step {step}; checkpoint saved, resume with --resume")
    finally:
        bar.close()
        source.close()
        log.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.train", description=__doc__.split("\n")[0])
    add_run_arguments(parser, steps=24000, batch_size=128, lr=3e-3, seed=1, val_seed=990001, val_every=1000)
    parser.add_argument("--export", type=Path, help="only export the run's best weights to this folder")
    args = parser.parse_args(argv)

    if (status := export_or_refuse(args, export, "train")) is not None:
        return status
    import tensorflow as tf

    from anprd.model import NetConfig, PlateNet

    saved = start_run(args, "train.train", argv, NetConfig().to_json())
    tf.keras.utils.set_random_seed(args.seed)
    net = PlateNet(NetConfig.from_json(saved["net"]))
    optimizer, train_step, predict = build_training(net, args.steps, args.lr)
    step, best = starting_point(args, net.window_model, optimizer)

    def make_validation() -> dict[str, np.ndarray]:
        print(f"generating {args.val_count} validation windows (seed {args.val_seed})")
        return generate_batches(args.val_count, args.val_seed, [str(b) for b in args.backgrounds], 1.0,
                                styled=args.styled)

    val = cached_validation(args.run, make_validation)
    source = BatchSource(args.workers, args.seed * 1000 + step, [str(b) for b in args.backgrounds],
                         args.batch_size, balanced=args.balance_backgrounds, styled=args.styled)

    def train_on_batch(b: dict[str, np.ndarray]):
        return train_step(b["image"], b["present"], b["box"], b["labels"], b["label_len"], b["read"],
                          b["columns"], b["columns_ok"])

    def difficulty_at(at: int) -> float:
        # The curriculum eases a fresh network in; a second stage starts where the first ended.
        return 1.0 if args.init_from else min(1.0, at / (0.4 * args.steps))

    train_loop(args, net.window_model, optimizer, source, step, best, train_on_batch,
               ["loss", "presence_loss", "ctc_loss", "column_loss", "box_loss"],
               lambda: evaluate(predict, val),
               ["presence_acc", "presence_fp_at_0.99", "presence_recall_at_0.99", "read_acc", "char_acc"],
               difficulty_at)
    return 0


if __name__ == "__main__":
    sys.exit(main())
