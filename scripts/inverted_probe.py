"""What reading plates inverted too (`detector.read_inverted`) adds: the detections that change when
it is turned on, each with its confidence and whether it is a labelled plate read right.

The floor `detector.inverted_min_confidence` was chosen from this output on synthetic validation
sets (docs/accuracy.md, "Dark plates"). Set `detector.inverted_min_confidence: 0` in a config to
see every inverted reading.

    python scripts/inverted_probe.py data/synth-cars-val data/synth-cars-dark-val [--config C]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", type=Path, nargs="+", help="labelled scene folders (anprd eval format)")
    parser.add_argument("--config", type=Path, help="config whose detector section is used")
    args = parser.parse_args(argv)

    from anprd.config import load_config
    from anprd.config.detector import DetectorConfig
    from anprd.ctc import normalise_plate
    from anprd.detector import PlateDetector, resolve_model_dir
    from anprd.evaluate import IOU_MATCH, read_labels
    from anprd.imageio import read_image

    base = load_config(args.config).detector if args.config else DetectorConfig()
    base_dir = args.config.resolve().parent if args.config else REPO
    detector = PlateDetector(resolve_model_dir(base.model, base_dir), base, base_dir)
    rows = []
    for folder in args.folders:
        for labelled in read_labels(folder):
            image = read_image(labelled.path)
            found = {}
            for inverted in (True, False):
                detector.config = base.model_copy(update={"read_inverted": inverted})
                found[inverted] = detector.detect(image)
            for det in found[True]:
                if any(det.box.iou(other.box) > 0.5 and det.text == other.text for other in found[False]):
                    continue
                right = any(det.box.iou(box) >= IOU_MATCH and normalise_plate(text) == det.text
                            for box, text in labelled.plates)
                on_plate = any(det.box.iou(box) >= IOU_MATCH for box, _ in labelled.plates)
                rows.append((det.confidence, right, on_plate, det.text, labelled.path.name))
    print("confidence\tread right\ton a plate\ttext\timage")
    for confidence, right, on_plate, text, name in sorted(rows):
        print(f"{confidence:.3f}\t{right}\t{on_plate}\t{text}\t{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
