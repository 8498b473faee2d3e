"""Fit a model's confidence calibration on synthetic validation scenes and store it in its model.json.

A reading's probability from the CTC reader is how likely the network finds the text, not how often
such readings are right: trained on clean synthetic plates, it is sure of readings that real plates
show it to be wrong about. Platt scaling, sigmoid(a * logit(p) + b), is fitted by maximum likelihood
on (probability, read right) pairs of every plate the detector finds in labelled synthetic scenes
(`python -m train.gen --scenes`), never on real photos; `anprd.detector.Calibration` applies it.

    python -m train.calibrate --model models/anprd-v10 data/synth-val-styled data/synth-val
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

__all__ = ["collect", "fit_platt", "main"]


def collect(model: Path, folders: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """(raw probabilities, read right) of every found plate in `folders`, the model uncalibrated."""
    from anprd.config.detector import DetectorConfig
    from anprd.detector import Calibration, PlateDetector
    from anprd.evaluate import read_labels, score_image
    from anprd.imageio import read_image

    detector = PlateDetector(model.resolve(), DetectorConfig())
    detector.calibration = Calibration()  # fit on the raw probabilities
    probabilities, right = [], []
    for folder in folders:
        for labelled in read_labels(folder):
            score = score_image(labelled.plates, detector.detect(read_image(labelled.path)))
            for truth, read, confidence in score.reads:
                probabilities.append(confidence)
                right.append(truth == read)
    return np.array(probabilities, np.float64), np.array(right, bool)


def fit_platt(probabilities: np.ndarray, right: np.ndarray) -> tuple[float, float]:
    """(a, b) minimising the log loss of sigmoid(a * logit(p) + b) against `right`."""
    p = np.clip(probabilities, 1e-9, 1 - 1e-9)
    z = np.log(p / (1 - p))
    y = right.astype(np.float64)

    def loss(params: np.ndarray) -> float:
        t = params[0] * z + params[1]
        return float(np.mean(np.logaddexp(0, t) - y * t))

    result = minimize(loss, np.array([1.0, 0.0]), method="Nelder-Mead")
    a, b = (float(v) for v in result.x)
    if a <= 0:
        raise ValueError(f"calibration fit is not increasing (a = {a:.3f}): too few or odd samples")
    return a, b


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.calibrate", description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="model folder; its model.json is updated")
    parser.add_argument("scenes", type=Path, nargs="+", help="labelled synthetic scene folders")
    args = parser.parse_args(argv)
    from anprd.errors import AnprdError
    from anprd.evaluate import expected_calibration_error

    meta_path = args.model / "model.json"
    try:
        probabilities, right = collect(args.model, args.scenes)
        if len(right) < 50 or right.all() or not right.any():
            raise ValueError(f"{len(right)} plates found, {int(right.sum())} read right: need at least 50, "
                             "with some right and some wrong, to fit a calibration")
        a, b = fit_platt(probabilities, right)
        meta = json.loads(meta_path.read_text())
    except (AnprdError, OSError, ValueError) as exc:
        print(f"train.calibrate: {exc}", file=sys.stderr)
        return 2
    calibrated = 1 / (1 + np.exp(-(a * np.log(np.clip(probabilities, 1e-9, 1 - 1e-9)
                                                / (1 - np.clip(probabilities, 1e-9, 1 - 1e-9))) + b)))
    before = expected_calibration_error(probabilities.tolist(), right.tolist())
    after = expected_calibration_error(calibrated.tolist(), right.tolist())
    meta["calibration"] = {
        "method": "platt", "a": round(a, 5), "b": round(b, 5),
        "fitted_on": [str(f) for f in args.scenes], "plates": int(len(right)),
        "read_right": round(float(right.mean()), 4),
        "ece_before": round(float(before), 4) if before is not None else None,
        "ece_after": round(float(after), 4) if after is not None else None,
        "command": "python -m train.calibrate " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{len(right)} plates, {right.mean():.1%} read right: a={a:.4f} b={b:.4f}, "
          f"ECE {before:.4f} -> {after:.4f} (on the fitting scenes); written to {meta_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
