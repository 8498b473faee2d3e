"""`anprd` command line: thin wrappers over the stages, driven by argparse and config.yaml.

Every user error (bad config, missing model, unreadable image, bad labels) ends as one line on stderr
naming the file, key or value, and exit status 2; nothing is lost and no traceback is shown.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from anprd.errors import AnprdError

__all__ = ["main"]


class UserError(AnprdError):
    """An error the user can fix; printed as one line."""


def _detector_config(args: argparse.Namespace):
    """The detector section of --config (if given), with --model overriding the model path."""
    from anprd.config.detector import DetectorConfig

    base_dir = None
    if getattr(args, "config", None):
        from anprd.config import load_config

        config = load_config(args.config).detector
        base_dir = Path(args.config).resolve().parent
    else:
        config = DetectorConfig()
    if getattr(args, "model", None):
        config = config.model_copy(update={"model": str(Path(args.model).resolve())})
    return config, base_dir


def _load_detector(args: argparse.Namespace):
    # no TensorFlow here: the detector imports it (quietly, anprd.runtime) only if it serves a network
    from anprd.detector import PlateDetector

    config, base_dir = _detector_config(args)
    return PlateDetector.from_config(config, base_dir)


def detection_json(det) -> dict:
    return {
        "plate": det.text,
        "confidence": round(det.confidence, 4),
        "presence": round(det.presence, 4),
        "candidates": [{"plate": c.text, "confidence": c.confidence} for c in det.candidates],
        "box": {"x": round(det.box.x), "y": round(det.box.y), "w": round(det.box.w), "h": round(det.box.h)},
        "pattern": det.pattern,
    }


# --------------------------------------------------------------------------------------------------
def cmd_detect(args: argparse.Namespace) -> int:
    import cv2

    from anprd.annotate import draw_detections, overwritten_input
    from anprd.imageio import IMAGE_SUFFIXES, check_image, read_image  # ImageReadError: one line

    paths = [Path(p) for p in args.images]
    for path in paths:  # fail on a bad input before loading the model; images are not kept, so
        check_image(path)  # a thousand photos do not all sit in memory (decoding again is ~2% of a detect)
    annotate_dir = None
    if args.annotate:
        out = Path(args.annotate)
        if len(paths) > 1 or out.suffix.lower() not in IMAGE_SUFFIXES:
            try:
                out.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(f"{out}: cannot make the folder for annotated images "
                                f"({exc.strerror or exc})") from None
            annotate_dir = out
        elif (same := overwritten_input(out, paths)) is not None:
            raise UserError(f"{out}: --annotate would overwrite the input image {same}")
    targets = _annotation_targets(paths, annotate_dir) if annotate_dir else []
    detector = _load_detector(args)
    for index, path in enumerate(paths):
        image = read_image(path)
        detections = detector.detect(image)
        if args.json:
            print(json.dumps({"image": str(path), "plates": [detection_json(d) for d in detections]}))
        else:
            print(f"{path}: {len(detections)} plate(s)")
            for d in detections:
                cands = ", ".join(f"{c.text} {c.confidence:.3f}" for c in d.candidates)
                print(f"  {d.text:<10} confidence {d.confidence:.3f}  box x={d.box.x:.0f} y={d.box.y:.0f} "
                      f"w={d.box.w:.0f} h={d.box.h:.0f}  candidates: {cands}")
        if args.annotate:
            target = targets[index] if annotate_dir else Path(args.annotate)
            encoded, data = cv2.imencode(target.suffix, draw_detections(image, detections))
            try:
                if not encoded:
                    raise OSError("cannot encode the image")
                target.write_bytes(data.tobytes())  # by bytes: any file name (see anprd.imageio)
            except OSError as exc:
                raise UserError(f"{target}: cannot write annotated image ({exc.strerror or exc})") from None
    return 0


def _annotation_targets(paths: list[Path], folder: Path) -> list[Path]:
    """`NAME.annotated.jpg` in `folder` per input, in order; inputs of one name (from different
    folders, or one given twice) get `NAME-2.annotated.jpg`, ... rather than overwrite each other."""
    targets: list[Path] = []
    taken: set[str] = set()
    for path in paths:
        name, n = path.stem, 1
        while name in taken:
            n += 1
            name = f"{path.stem}-{n}"
        taken.add(name)
        targets.append(folder / f"{name}.annotated.jpg")
    return targets


def cmd_eval(args: argparse.Namespace) -> int:
    from anprd.evaluate import evaluate, read_labels

    folder = Path(args.folder)
    read_labels(folder)  # validate the labels before loading the model
    detector = _load_detector(args)
    progress = None
    if not args.json and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(desc="eval", unit="img", leave=False)

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

    report = evaluate(folder, detector.detect, progress)
    if args.json:
        print(json.dumps(report.as_json()))
    else:
        print(f"{folder}")
        print(report.table())
        print(report.breakdown())
    return 0


def cmd_train(train_args: list[str]) -> int:
    """`anprd train ARGS` is `python -m train.train ARGS`; `anprd train reader ARGS` is
    `python -m train.train_reader ARGS`."""
    if train_args[:1] == ["reader"]:
        from train.train_reader import main as train_reader_main

        return train_reader_main(train_args[1:])
    from train.train import main as train_main

    return train_main(train_args)


def cmd_finetune(finetune_args: list[str]) -> int:
    """`anprd finetune DIR --out MODEL_DIR ...`: fine-tune the plate reader on labelled photos
    (`train.finetune`, imported only for this command)."""
    from anprd.runtime import import_tensorflow
    from train.finetune import main as finetune_main

    return finetune_main(finetune_args, prog="anprd finetune", load_tensorflow=import_tensorflow)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < float("inf"):  # also refuses nan, which would never time out
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, got {text!r}")
    return value


def cmd_subscribe(args: argparse.Namespace) -> int:
    from anprd.subscriber import subscribe_command

    return subscribe_command(
        args.endpoint, args.camera, args.pretty, args.max_events, args.timeout,
        since=args.since, stream=args.stream, catchup=args.catchup,
        curve_server_key=args.curve_server_key, curve_client_key=args.curve_client_key,
    )


def cmd_keygen(args: argparse.Namespace) -> int:
    from anprd.curve import keygen

    public, secret = keygen(Path(args.folder), args.name)
    print(f"public key (give it to the other side): {public}")
    print(f"secret key (keep it on this host, mode 0600): {secret}")
    return 0


def cmd_proxy(args: argparse.Namespace) -> int:
    from anprd.logs import setup_logging
    from anprd.proxy import proxy_command

    setup_logging("INFO")
    return proxy_command(
        args.frontend, args.backend, curve_secret_key=args.curve_secret_key,
        frontend_clients=args.frontend_clients, backend_clients=args.backend_clients, hwm=args.hwm,
    )


def _sequence(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def cmd_run(args: argparse.Namespace) -> int:
    from anprd.config import load_config

    # Checked before any model loads: a bad config fails at once (ConfigError: one line).
    load_config(Path(args.config))
    from anprd.daemon import run_daemon

    return run_daemon(Path(args.config))


def cmd_replay(args: argparse.Namespace) -> int:
    from anprd.replay import replay_command

    return replay_command(args)


# --------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anprd", description="Real-time number plate recognition.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("detect", help="find and read plates in still images")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--annotate", metavar="OUT", help="draw results to OUT (a file, or a folder for many)")
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.add_argument("--config", help="read the detector section of this config.yaml")
    p.add_argument("--model", help="model folder (overrides the config)")
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("eval", help="score detection and reading on DIR/labels.tsv")
    p.add_argument("folder", metavar="DIR")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--config", help="read the detector section of this config.yaml")
    p.add_argument("--model", help="model folder (overrides the config)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("run", help="run the daemon: cameras -> detector -> tracker -> ZeroMQ events")
    p.add_argument("--config", required=True)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("replay", help="run the pipeline over a video file as fast as it goes")
    p.add_argument("video", metavar="VIDEO")
    p.add_argument("--truth", help="CSV of plate[,first_frame,last_frame] to score against")
    p.add_argument("--annotate", metavar="OUT", help="write an annotated video (.avi or .mp4)")
    p.add_argument("--json", action="store_true", help="end with one JSON summary line")
    p.add_argument("--config", help="config.yaml (detector and tracker sections are used)")
    p.add_argument("--model", help="model folder (overrides the config)")
    p.add_argument("--camera-id", default="replay", help="camera id in the events")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("subscribe", help="print plate events from a running daemon, one JSON per line")
    p.add_argument("endpoint", metavar="ENDPOINT", help="e.g. tcp://127.0.0.1:5555")
    p.add_argument("--camera", help="only this camera id")
    p.add_argument("--pretty", action="store_true", help="indented JSON")
    p.add_argument("--max-events", type=_positive_int, help="exit after this many events")
    p.add_argument("--timeout", type=_seconds, help="exit after this many seconds in all "
                   "(status 1 if fewer than --max-events arrived)")
    p.add_argument("--catchup", metavar="ENDPOINT", help="the daemon's publisher.catchup_endpoint: "
                   "events in order, each once, holes in the live feed filled from its spool")
    p.add_argument("--since", type=_sequence, metavar="N", help="first print the events after "
                   "sequence N (0: all the spool holds), then follow live (needs --catchup)")
    p.add_argument("--stream", metavar="ID", help="the stream N belongs to (default: the daemon's "
                   "current one)")
    p.add_argument("--curve-server-key", type=Path, metavar="FILE",
                   help="CURVE: the daemon's (or proxy's) public key file")
    p.add_argument("--curve-client-key", type=Path, metavar="FILE",
                   help="CURVE: this subscriber's secret key file (from anprd keygen)")
    p.set_defaults(func=cmd_subscribe)

    p = sub.add_parser("keygen", help="write a CURVE key pair: DIR/NAME.key (public) and "
                                      "DIR/NAME.key_secret (secret, mode 0600)")
    p.add_argument("folder", metavar="DIR")
    p.add_argument("--name", default="anprd", help="file name stem (default anprd)")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("proxy", help="fan-in: daemons (publisher.mode: connect) to one endpoint "
                                     "for subscribers (XSUB/XPUB), CURVE on either side")
    p.add_argument("--frontend", required=True, metavar="ENDPOINT",
                   help="bound for daemons to connect to, e.g. tcp://*:5557")
    p.add_argument("--backend", required=True, metavar="ENDPOINT",
                   help="bound for subscribers to connect to, e.g. tcp://*:5558")
    p.add_argument("--curve-secret-key", type=Path, metavar="FILE",
                   help="CURVE: the proxy's secret key file (from anprd keygen)")
    p.add_argument("--frontend-clients", type=Path, nargs="+", default=[], metavar="PATH",
                   help="CURVE on the frontend: daemons' public key files or folders allowed in")
    p.add_argument("--backend-clients", type=Path, nargs="+", default=[], metavar="PATH",
                   help="CURVE on the backend: subscribers' public key files or folders allowed in")
    p.add_argument("--hwm", type=_positive_int, default=10_000,
                   help="messages queued per daemon and per subscriber (default 10000)")
    p.set_defaults(func=cmd_proxy)

    from anprd.bridge import add_bridge_parser  # argparse only; paho is imported when it runs

    add_bridge_parser(sub)

    p = sub.add_parser("train", help="train the detector (options of python -m train.train), or with "
                                     "`reader` first the plate reader (python -m train.train_reader)",
                       add_help=False)
    p.add_argument("train_args", nargs=argparse.REMAINDER)  # listed for --help; `main` runs it unparsed

    p = sub.add_parser("finetune", add_help=False,
                       help="fine-tune the plate reader on your labelled photos: DIR --out MODEL_DIR "
                            "[--model M] [--steps N] [--holdout 0.2] [--seed S] (anprd finetune --help)")
    p.add_argument("finetune_args", nargs=argparse.REMAINDER)  # parsed by train.finetune
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:  # every option after it is the trainer's (argparse would claim --run)
        command, run = "train", lambda: cmd_train(argv[1:])
    elif argv[:1] == ["finetune"]:  # its options are train.finetune's, parsed there
        command, run = "finetune", lambda: cmd_finetune(argv[1:])
    else:
        args = build_parser().parse_args(argv)
        command, run = args.command, lambda: args.func(args)
    try:
        return run()
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # user-facing errors become one line; anything else is a real bug
        if _is_user_error(exc):
            print(f"anprd {command}: {exc}", file=sys.stderr)
            return 2
        raise


def _is_user_error(exc: Exception) -> bool:
    return isinstance(exc, (AnprdError, FileNotFoundError, PermissionError))


if __name__ == "__main__":
    sys.exit(main())
