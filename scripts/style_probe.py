"""How each plate reader reads each plate style and each glyph family, on crops rendered as the
detector cuts them (`train.gen.sample_read_crop`, full camera effects at a chosen difficulty).

The real-plate failures have names (a bare-bar 1 read as I, the EU band's letter read as a first
character, a Brazilian rounded O read as 0, light text on a black plate); each style of
`anprd/styles` and each plate-font family of `train.plate_fonts` is one such case. Prints one row per
style or family: crops, and for each model folder the greedy read rate of its readers and the
commonest confusion.

    python scripts/style_probe.py models/anprd-v9 models/anprd-v10 --count 60 --seed 5
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def readers(model_dir: Path):
    from anprd.model import ReaderConfig, build_reader

    meta = json.loads((model_dir / "model.json").read_text())
    out = []
    for entry in meta["readers"]:
        reader = build_reader(ReaderConfig.from_json(entry["net"]))
        reader.load_weights(model_dir / entry["weights"])
        out.append(reader)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--count", type=int, default=60, help="crops per style and per family")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--difficulty", type=float, default=0.5)
    parser.add_argument("--both-polarities", action="store_true",
                        help="also read each crop inverted (255 - crop) and keep the more probable "
                             "reading, as the detector does (anprd.detector.PlateDetector.read)")
    parser.add_argument("--backgrounds", type=Path, default=REPO.parent / "shared" / "data" / "streets")
    args = parser.parse_args(argv)

    from anprd.ctc import greedy_decode
    from anprd.evaluate import substitutions
    from train.fonts import available_fonts, plate_fonts_by_family
    from train.gen import make_backgrounds, sample_read_crop
    from train.plates import all_styles, only_countries

    def softmax(logits: np.ndarray) -> np.ndarray:
        e = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    nets = {m.name: readers(m) for m in args.models}
    fonts = available_fonts()
    folders = [args.backgrounds] if args.backgrounds.is_dir() else []
    cases = [("style", s.key) for s in all_styles()]
    cases += [("glyphs", f) for f in sorted(plate_fonts_by_family())]
    header = " | ".join(f"{name} read | {name} commonest confusion" for name in nets)
    print(f"| case | crops | {header} |")
    print("|---|---|" + "---|---|" * len(nets))
    for kind, case in cases:
        rng = np.random.default_rng(args.seed)
        bgs = make_backgrounds(folders, True, rng)
        if kind == "style":
            only_countries([case])
            samples = [sample_read_crop(rng, bgs, fonts, args.difficulty, styled=1.0)
                       for _ in range(args.count)]
        else:  # every style, each plate in a font of this family
            only_countries([])
            family = {name: plate_fonts_by_family()[case] for name in plate_fonts_by_family()}
            samples = [sample_read_crop(rng, bgs, [], args.difficulty, styled=1.0, plate_fonts=family)
                       for _ in range(args.count)]
        images = np.stack([s.image for s in samples])[..., None].astype(np.float32)
        cells = []
        for reader_list in nets.values():
            probs = np.mean([softmax(r(images, training=False)["text"].numpy()) for r in reader_list], axis=0)
            if args.both_polarities:
                inverted = np.mean([softmax(r(255 - images, training=False)["text"].numpy())
                                    for r in reader_list], axis=0)
                # the greedy path's probability: which polarity the reader is surer of
                sure = np.log(probs.max(axis=-1)).sum(axis=-1)
                sure_inverted = np.log(inverted.max(axis=-1)).sum(axis=-1)
                probs = np.where((sure_inverted > sure)[:, None, None], inverted, probs)
            texts = [greedy_decode(p) for p in probs]
            right = sum(t == s.text for t, s in zip(texts, samples, strict=True))
            swaps = Counter(pair for t, s in zip(texts, samples, strict=True) if t != s.text
                            for pair in substitutions(s.text, t))
            common = ", ".join(f"{a}->{b} {n}" for (a, b), n in swaps.most_common(2)) or "-"
            cells += [f"{right / len(samples):.0%}", common]
        print(f"| {kind} {case} | {len(samples)} | " + " | ".join(cells) + " |", flush=True)
    only_countries([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
