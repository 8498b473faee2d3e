"""Train the plate reader: a CTC network that reads tight 32x128 crops of plates the detector found.

    python -m train.train_reader --run runs/r1 --steps 4000 --seed 11 --backgrounds ../shared/data/streets
    python -m train.train_reader --run runs/r1 --resume                 # continue a stopped run
    python -m train.train_reader --run runs/r1 --export models/anprd-v10  # add it to a detector's folder

The detector's window network reads text too, but in its 64x128 window a plate fills ~70% of the
width, so an 8-character EU plate's letters are ~14 px tall and ~8 px wide. The reader sees the plate
box alone, stretched to 32x128 (`anprd.detector.reader_crop`), and is trained on crops cut exactly as
the detector cuts them, around boxes with the detector's errors (`train.gen.sample_read_crop`).

The loop is train.train's: batches from worker processes with a ring buffer, a difficulty curriculum
over the first 40% of the steps, CTC plus per-column targets, validation on a fixed set (its own
seed) keeping the best weights, checkpoints every validation and `--resume`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from anprd.ctc import BLANK
from train.train import (
    CHAR_INDEX,
    MAX_LABEL,
    BatchSource,
    ExportError,
    add_run_arguments,
    best_weights,
    cached_validation,
    export_or_refuse,
    greedy_decode,
    labels_to_text,
    run_record,
    start_run,
    starting_point,
    train_loop,
    training_minutes,
    training_stages,
)

__all__ = ["main", "make_reader_batch"]

READER_COLUMNS = 32
READER_COLUMN_WIDTH = 128 / READER_COLUMNS


def make_reader_batch(samples: list) -> dict[str, np.ndarray]:
    n = len(samples)
    batch = {
        "image": np.stack([s.image for s in samples])[..., None],
        "labels": np.zeros((n, MAX_LABEL), np.int32),
        "label_len": np.zeros((n,), np.int32),
        "columns": np.full((n, READER_COLUMNS), BLANK, np.int32),
        "columns_ok": np.zeros((n,), np.float32),
    }
    for i, s in enumerate(samples):
        codes = [CHAR_INDEX[c] for c in s.text[:MAX_LABEL]]
        batch["labels"][i, : len(codes)] = codes
        batch["label_len"][i] = len(codes)
        cols = [int(np.clip(x / READER_COLUMN_WIDTH, 0, READER_COLUMNS - 1)) for x in s.char_x[:MAX_LABEL]]
        if len(set(cols)) == len(cols) == len(codes):  # two characters in a column: CTC only
            batch["columns"][i, cols] = codes
            batch["columns_ok"][i] = 1.0
    return batch


def validation_set(count: int, seed: int, backgrounds: list[str], styled: float = 0.0
                   ) -> dict[str, np.ndarray]:
    from train.fonts import available_fonts
    from train.gen import make_backgrounds, sample_read_crop

    rng = np.random.default_rng(seed)
    bgs = make_backgrounds([Path(b) for b in backgrounds], True, rng)
    fonts = available_fonts()
    return make_reader_batch([sample_read_crop(rng, bgs, fonts, 1.0, styled=styled) for _ in range(count)])


def evaluate(predict, data: dict[str, np.ndarray], batch_size: int = 256) -> dict[str, float]:
    texts: list[str] = []
    for i in range(0, len(data["image"]), batch_size):
        texts += greedy_decode(predict(data["image"][i: i + batch_size].astype(np.float32)).numpy())
    truth = labels_to_text(data["labels"], data["label_len"])
    pairs = list(zip(truth, texts, strict=True))
    char_hits = sum(sum(a == b for a, b in zip(t, p, strict=False)) for t, p in pairs)
    char_total = sum(max(len(t), len(p)) for t, p in pairs)
    return {"read_acc": float(np.mean([t == p for t, p in pairs])),
            "char_acc": char_hits / max(1, char_total)}


def build_training(model, total_steps: int, lr: float):
    import keras
    import tensorflow as tf

    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=total_steps, alpha=0.03, warmup_target=lr,
        warmup_steps=min(500, total_steps // 10))
    optimizer = keras.optimizers.Adam(schedule, clipnorm=5.0)

    @tf.function(reduce_retracing=True)
    def train_step(image, labels, label_len, columns, columns_ok):
        with tf.GradientTape() as tape:
            logits = model(tf.cast(image, tf.float32), training=True)["text"]
            ctc = tf.nn.ctc_loss(labels=labels, logits=logits, label_length=label_len,
                                 logit_length=tf.fill([tf.shape(image)[0]], logits.shape[1]),
                                 logits_time_major=False, blank_index=BLANK)
            ctc_loss = tf.reduce_mean(ctc)
            # per-column targets from the generator shorten CTC's all-blank plateau, as in train.train
            per_column = tf.nn.sparse_softmax_cross_entropy_with_logits(columns, logits)
            column_ce = tf.reduce_mean(per_column, axis=1)
            column_loss = tf.reduce_sum(column_ce * columns_ok) / tf.maximum(tf.reduce_sum(columns_ok), 1.0)
            loss = 0.1 * ctc_loss + column_loss
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss, ctc_loss, column_loss

    @tf.function(reduce_retracing=True)
    def predict(image):
        return model(image, training=False)["text"]

    return optimizer, train_step, predict


def export(run: Path, out_dir: Path) -> None:
    """Add the run's best reader weights to a detector model folder as `reader-<run>.weights.h5` and
    list them under "readers" in its model.json; exporting a run again replaces its entry. The
    detector reads each plate with every listed reader (`anprd.detector`)."""
    import shutil

    weights = best_weights(run)
    meta_path = out_dir / "model.json"
    if not meta_path.is_file():
        raise ExportError(f"{meta_path} not found; export the detector there first "
                          "(python -m train.train --run RUN --export DIR)")
    name = f"reader-{run.name}.weights.h5"
    shutil.copyfile(weights, out_dir / name)
    meta = json.loads(meta_path.read_text())
    record = {"weights": name, "input": {"width": 128, "height": 32, "channels": 1},
              "text_columns": READER_COLUMNS, **run_record(run), "minutes": training_minutes(run),
              "stages": training_stages(run)}
    meta["readers"] = [*(r for r in meta.get("readers", []) if r.get("weights") != name), record]
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"exported {weights} -> {out_dir / name} (val {record['validation']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.train_reader", description=__doc__.split("\n")[0])
    add_run_arguments(parser, steps=4000, batch_size=64, lr=2e-3, seed=11, val_seed=990011, val_every=500)
    parser.add_argument("--export", type=Path, help="only add the run's best weights to this model folder")
    args = parser.parse_args(argv)

    if (status := export_or_refuse(args, export, "train_reader")) is not None:
        return status
    import tensorflow as tf

    from anprd.model import ReaderConfig, build_reader

    saved = start_run(args, "train.train_reader", argv, ReaderConfig().to_json())
    tf.keras.utils.set_random_seed(args.seed)
    model = build_reader(ReaderConfig.from_json(saved["net"]))
    optimizer, train_step, predict = build_training(model, args.steps, args.lr)
    step, best = starting_point(args, model, optimizer)

    def make_validation() -> dict[str, np.ndarray]:
        print(f"generating {args.val_count} validation crops (seed {args.val_seed})")
        return validation_set(args.val_count, args.val_seed, [str(b) for b in args.backgrounds], args.styled)

    val = cached_validation(args.run, make_validation)
    source = BatchSource(args.workers, args.seed * 1000 + step, [str(b) for b in args.backgrounds],
                         args.batch_size, task="reader", balanced=args.balance_backgrounds,
                         styled=args.styled)
    train_loop(args, model, optimizer, source, step, best,
               lambda b: train_step(b["image"], b["labels"], b["label_len"], b["columns"], b["columns_ok"]),
               ["loss", "ctc_loss", "column_loss"], lambda: evaluate(predict, val), ["read_acc", "char_acc"],
               # a second stage (--init-from) starts at full difficulty, as in train.train
               lambda at: 1.0 if args.init_from else min(1.0, at / (0.4 * args.steps)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
