"""List the plates of a synthetic scene set that carry an occluding bar, and the characters under it.

    python scripts/occluded_plates.py --seed 525252 --count 150 --set data/synth-test-s9

The generator paints a bar across 3% of scene plates (`train.gen.occlusion_bar`) and keeps the full
text as the label, so a bar over a character can make a plate unreadable for any reader. The scenes
are regenerated from the seed and count of `python -m train.gen --scenes` (the generator is
deterministic; `--set` checks that the texts match the set's labels.tsv) and each bar is related
to the plate's character centres: a character is "under" the bar when its centre lies within 0.3 of
the character pitch of it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

import train.gen as gen
from anprd.evaluate import EvalError, read_labels
from train.fonts import available_fonts

__all__ = ["main", "occluded_plates"]

NEAR_BAR = 0.3  # of the character pitch


def characters_under(text: str, centres: np.ndarray, bar: tuple[int, int]) -> str:
    """The characters of `text` whose centre (canvas x) lies within NEAR_BAR pitches of the bar."""
    xs = centres[:, 0]
    pitch = float(np.median(np.diff(xs))) if len(xs) > 1 else float(bar[1] - bar[0]) * 3
    reach = NEAR_BAR * pitch
    return "".join(ch for ch, x in zip(text, xs, strict=True) if bar[0] - reach < x < bar[1] + reach)


def occluded_plates(seed: int, count: int) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """Regenerate `count` scenes from `seed`: every (file, text) and, for plates with a bar, (file,
    text, characters under the bar)."""
    rendered: list[tuple[str, str | None]] = []  # every plate drawn, placed in the scene or not
    bar: list[tuple[int, int] | None] = [None]
    draw_bar, draw_plate = gen.occlusion_bar, gen.render_plate_with_chars

    def spy_bar(canvas, rng, difficulty):
        bar[0] = draw_bar(canvas, rng, difficulty)
        return bar[0]

    def spy_plate(spec, *args, **kwargs):
        bar[0] = None
        canvas, corners, centres = draw_plate(spec, *args, **kwargs)
        rendered.append((spec.text, characters_under(spec.text, centres, bar[0]) if bar[0] else None))
        return canvas, corners, centres

    gen.occlusion_bar, gen.render_plate_with_chars = spy_bar, spy_plate
    try:
        rng = np.random.default_rng(seed)  # as `python -m train.gen --scenes` draws them
        fonts = available_fonts()
        backgrounds = gen.make_backgrounds(None, True, rng)
        labels: list[tuple[str, str]] = []
        barred: list[tuple[str, str, str]] = []
        for i in range(count):
            name = f"scene{i:05d}.jpg"
            start = len(rendered)
            _, plates = gen.sample_scene(rng, backgrounds, fonts, difficulty=1.0)
            drawn = iter(rendered[start:])
            for _, text in plates:  # placed plates are drawn plates in order; some find no room
                under = next(u for t, u in drawn if t == text)
                labels.append((name, text))
                if under is not None:
                    barred.append((name, text, under))
    finally:
        gen.occlusion_bar, gen.render_plate_with_chars = draw_bar, draw_plate
    return labels, barred


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/occluded_plates.py",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, required=True, help="the set's train.gen --seed")
    parser.add_argument("--count", type=int, required=True, help="the set's train.gen --count")
    parser.add_argument("--set", type=Path, help="the set's folder, whose labels.tsv the regenerated texts "
                        "must match")
    args = parser.parse_args(argv)
    labels, barred = occluded_plates(args.seed, args.count)
    if args.set is not None:
        try:
            expected = [(item.path.name, text) for item in read_labels(args.set) for _, text in item.plates]
        except EvalError as exc:
            print(f"occluded_plates: {exc}", file=sys.stderr)
            return 2
        if expected != labels:
            print(f"occluded_plates: {args.set / 'labels.tsv'} does not match --seed {args.seed} "
                  f"--count {args.count} with this generator", file=sys.stderr)
            return 1
    print("file\tplate\tunder_bar")
    for name, text, under in barred:
        print(f"{name}\t{text}\t{under}")
    over = sum(1 for *_, under in barred if under)
    print(f"# {len(labels)} plates, {len(barred)} with a bar, {over} with a bar over a character")
    return 0


if __name__ == "__main__":
    sys.exit(main())
