"""CTC likelihoods, fusion across frames, and the tracker on synthetic detection sequences."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
import pytest
from pydantic import ValidationError

from anprd.config.tracker import TrackerConfig
from anprd.ctc import ALPHABET, BLANK
from anprd.ctc_fusion import (
    CandidateFusion,
    ctc_log_likelihood,
    ctc_log_likelihoods,
    fuse_detections,
)
from anprd.tracker import (
    AlphaBetaFilter,
    EndReason,
    StaticFilter,
    Tracker,
    TrackerUpdate,
    TrackReport,
    normalized_edit_distance,
)
from anprd.types import Box, Candidate, Detection

COLUMNS = 32
CLASSES = len(ALPHABET) + 1
FPS = 10.0


# --- synthetic reader output ------------------------------------------------------------------


def posteriors(
    text: str,
    confusions: dict[int, tuple[str, float]] | None = None,
    *,
    sharpness: float = 0.9,
    columns: int = COLUMNS,
) -> np.ndarray:
    """One-hot-ish CTC posteriors reading `text`: character i at column 3i+1, blanks elsewhere.

    confusions: {position: (other character, its probability)}; the true character then keeps
    `sharpness - probability`.
    """
    probs = np.full((columns, CLASSES), (1 - sharpness) / (CLASSES - 1))
    probs[:, BLANK] = sharpness
    for position, symbol in enumerate(text):
        column = 3 * position + 1
        probs[column] = (1 - sharpness) / (CLASSES - 1)
        truth = sharpness
        if confusions and position in confusions:
            other, other_prob = confusions[position]
            probs[column, ALPHABET.index(other)] = other_prob
            truth = sharpness - other_prob
        probs[column, ALPHABET.index(symbol)] = truth
    probs /= probs.sum(axis=1, keepdims=True)
    return probs.astype(np.float32)


def detection(
    x: float,
    y: float,
    text: str,
    *,
    confusions: dict[int, tuple[str, float]] | None = None,
    candidates: Sequence[tuple[str, float]] | None = None,
    with_probs: bool = True,
    pattern: str | None = None,
    w: float = 100.0,
    h: float = 25.0,
) -> Detection:
    """A detection whose best text is the argmax reading of its posteriors."""
    probs = posteriors(text, confusions) if with_probs else None
    best = text
    if confusions:
        chars = list(text)
        for position, (other, other_prob) in confusions.items():
            if other_prob > 0.9 - other_prob:
                chars[position] = other
        best = "".join(chars)
    listed = tuple(Candidate(t, c) for t, c in (candidates or [(best, 0.8)]))
    return Detection(
        box=Box(x, y, w, h),
        presence=0.99,
        text=best,
        confidence=listed[0].confidence if listed else 0.0,
        candidates=listed,
        char_probs=probs,
        pattern=pattern,
    )


def unread(x: float, y: float, marker: str) -> Detection:
    """A plate found but not read (no text, no posteriors); `marker` (as pattern) tells cars apart."""
    return Detection(
        box=Box(x, y, 100.0, 25.0), presence=0.9, text="", confidence=0.0, pattern=marker
    )


def run(
    tracker: Tracker, frames: Iterable[Sequence[Detection]], start: int = 0
) -> list[TrackerUpdate]:
    """Feed frames at FPS and return every update."""
    return [
        tracker.update(list(detections), frame_time=1_700_000_000.0 + n / FPS, frame_number=n)
        for n, detections in enumerate(frames, start=start)
    ]


def ended(updates: Iterable[TrackerUpdate]) -> list[TrackReport]:
    return [report for update in updates for report in update.ended]


def finish(tracker: Tracker, updates: list[TrackerUpdate], idle_frames: int = 30) -> None:
    """Feed empty frames until every track has ended (no flush: the loss rules must do it)."""
    start = updates[-1].frame_number + 1
    updates.extend(run(tracker, [[] for _ in range(idle_frames)], start=start))
    assert not tracker.live_tracks


# --- CTC forward algorithm --------------------------------------------------------------------


def _collapse(path: Iterable[int]) -> str:
    out, previous = [], None
    for symbol in path:
        if symbol != previous and symbol != BLANK:
            out.append(ALPHABET[symbol])
        previous = symbol
    return "".join(out)


def _brute_force(probs: np.ndarray, support: Sequence[int]) -> dict[str, float]:
    """P(text) for every text, summing all alignments over the classes in `support`."""
    totals: dict[str, float] = {}
    for path in itertools.product(support, repeat=probs.shape[0]):
        p = float(np.prod(probs[np.arange(len(path)), list(path)]))
        text = _collapse(path)
        totals[text] = totals.get(text, 0.0) + p
    return totals


def test_ctc_matches_brute_force_on_tiny_posteriors() -> None:
    rng = np.random.default_rng(1)
    support = [ALPHABET.index("A"), ALPHABET.index("B"), ALPHABET.index("1"), BLANK]
    probs = np.zeros((5, CLASSES))
    probs[:, support] = rng.dirichlet(np.ones(len(support)), size=5)
    truth = _brute_force(probs, support)
    assert sum(truth.values()) == pytest.approx(1.0)
    for text in ["", "A", "AA", "AB", "BA", "A1B", "AAA", "ABA1B", "AB1AB"]:
        expected = math.log(truth[text]) if truth.get(text, 0.0) > 0 else -math.inf
        assert ctc_log_likelihood(text, probs) == pytest.approx(expected, rel=1e-9)
    # Too long for 5 columns (a repeat needs a blank between): impossible.
    assert ctc_log_likelihood("AAAA", probs) == -math.inf
    assert ctc_log_likelihood("AB1AB1", probs) == -math.inf


def test_ctc_matches_brute_force_on_dense_posteriors() -> None:
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(CLASSES), size=3)
    truth = _brute_force(probs, range(CLASSES))
    likely = sorted(truth, key=truth.__getitem__, reverse=True)[:6]
    texts = [*likely, "", "7", "ZZ", "Q0Q"]
    batched = ctc_log_likelihoods(texts, probs)
    for text, value in zip(texts, batched, strict=True):
        assert value == pytest.approx(math.log(truth[text]), rel=1e-9)
        assert ctc_log_likelihood(text, probs) == pytest.approx(value)


def test_ctc_batched_over_frames_equals_one_at_a_time() -> None:
    frames = np.stack([posteriors("AB12CDE"), posteriors("XY98ZZZ"), posteriors("AB12CDF")])
    texts = ["AB12CDE", "XY98ZZZ", "AB12CD", ""]
    matrix = ctc_log_likelihoods(texts, frames)
    assert matrix.shape == (3, 4)
    for f in range(3):
        for k, text in enumerate(texts):
            assert matrix[f, k] == pytest.approx(ctc_log_likelihood(text, frames[f]))
    assert matrix[0, 0] > matrix[0, 2] and matrix[1, 1] > matrix[1, 0]


def test_ctc_is_stable_where_probabilities_underflow() -> None:
    # Each column is "A" or blank with 1/2: P("A") = C(T+1, 2) / 2^T, ~1e-600 for T = 2000.
    columns = 2000
    probs = np.zeros((columns, CLASSES))
    probs[:, ALPHABET.index("A")] = 0.5
    probs[:, BLANK] = 0.5
    expected = math.log(columns * (columns + 1) / 2) - columns * math.log(2)
    assert ctc_log_likelihood("A", probs) == pytest.approx(expected, rel=1e-9)


def test_ctc_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="alphabet"):
        ctc_log_likelihood("AB-12", posteriors("AB12"))
    with pytest.raises(ValueError, match="char_probs"):
        ctc_log_likelihood("AB", np.ones((COLUMNS, 10)))
    with pytest.raises(ValueError, match="non-negative"):
        ctc_log_likelihood("AB", -posteriors("AB"))


# --- fusion -----------------------------------------------------------------------------------

TRUTH = "AB12CDE"
# Three frames, each misreading a different character, each still giving the truth 0.35.
MISREADS = [{6: ("F", 0.55)}, {1: ("8", 0.55)}, {5: ("0", 0.55)}]


def _misread_frames(x0: float = 100.0) -> list[Detection]:
    frames = []
    for n, confusion in enumerate(MISREADS):
        misread = detection(x0, 100.0 + 5 * n, TRUTH, confusions=confusion)
        frames.append(
            Detection(
                box=misread.box,
                presence=misread.presence,
                text=misread.text,
                confidence=0.5,
                candidates=(Candidate(misread.text, 0.5), Candidate(TRUTH, 0.32)),
                char_probs=misread.char_probs,
            )
        )
    return frames


def test_fusion_beats_majority_vote() -> None:
    frames = _misread_frames()
    texts = [d.text for d in frames]
    assert TRUTH not in texts and len(set(texts)) == 3  # every frame misread, differently
    vote = Counter(texts).most_common(1)[0][0]
    assert vote != TRUTH
    fused = fuse_detections(frames)
    assert fused.text == TRUTH
    assert fused.confidence > 0.5
    assert fused.candidates[0] == Candidate(TRUTH, fused.confidence)


def test_fused_confidence_counts_correlated_frames_as_few_witnesses() -> None:
    # 40 frames that split 24/16 between two readings of one character: as independent
    # evidence the winner would be certain; tempered to 3 frames it stays uncertain.
    frames = [detection(100.0, 100.0, "E40FWR", confusions={2: ("D", 0.3 if n % 5 < 3 else 0.6)})
              for n in range(40)]
    independent = fuse_detections(frames, effective_frames=len(frames))
    tempered = fuse_detections(frames, effective_frames=3)
    assert tempered.text == independent.text == "E40FWR"
    assert independent.confidence > 0.99
    assert 0.5 < tempered.confidence < 0.95
    assert [c.text for c in tempered.candidates] == [c.text for c in independent.candidates]
    with pytest.raises(ValueError, match="effective_frames"):
        CandidateFusion(effective_frames=0.5)


def test_several_reads_of_one_frame_count_as_one_frame() -> None:
    # Frame A was read three times (crops at three scales), each read leaning to "AB12"; frame B
    # once, leaning more firmly to "AB13". Averaged, A weighs as one frame and B's firmer read
    # wins; summed as three frames, A would outvote B.
    a_read = posteriors("AB12", {3: ("3", 0.35)})
    b_read = posteriors("AB13", {3: ("2", 0.25)})
    frame_a = Detection(box=Box(0, 0, 100, 25), presence=0.99, text="AB12", confidence=0.5,
                        char_probs=np.stack([a_read] * 3))
    frame_b = Detection(box=Box(0, 0, 100, 25), presence=0.99, text="AB13", confidence=0.6,
                        char_probs=b_read)
    assert fuse_detections([frame_a, frame_b]).text == "AB13"
    separately = [dataclasses.replace(frame_a, char_probs=a_read)] * 3 + [frame_b]
    assert fuse_detections(separately).text == "AB12"
    # One read given as (1, T, C) scores exactly as (T, C).
    single = fuse_detections([dataclasses.replace(frame_a, char_probs=a_read[None]), frame_b])
    assert single == fuse_detections([dataclasses.replace(frame_a, char_probs=a_read), frame_b])


def test_a_one_character_reading_gives_no_event_unless_allowed() -> None:
    lamp = [[detection(300.0, 200.0, "U")] for _ in range(12)]  # e.g. a tail light read as "U"
    for min_length, expected in ((2, []), (1, ["U"])):
        tracker = Tracker(TrackerConfig(min_frames=3, min_plate_length=min_length))
        updates = run(tracker, lamp)
        finish(tracker, updates)
        assert [r.reading.text for r in ended(updates)] == expected


def test_fusion_beats_majority_vote_through_the_tracker() -> None:
    tracker = Tracker(TrackerConfig(min_frames=3))
    updates = run(tracker, [[d] for d in _misread_frames()])
    finish(tracker, updates)
    (report,) = ended(updates)
    assert report.reading.text == TRUTH


def test_fusion_falls_back_to_listed_confidences_without_posteriors() -> None:
    frames = [
        detection(
            0, 0, "AB12CDE", with_probs=False, candidates=[("AB12CDF", 0.5), ("AB12CDE", 0.4)]
        ),
        detection(
            0, 0, "AB12CDE", with_probs=False, candidates=[("AB12CDE", 0.6), ("AB12CDF", 0.3)]
        ),
        detection(0, 0, "AB12CDE", with_probs=False, candidates=[("A812CDE", 0.7)]),
    ]
    fused = fuse_detections(frames, top_n=2)
    assert fused.text == "AB12CDE"
    assert len(fused.candidates) == 2
    confidences = [c.confidence for c in fused.candidates]
    assert confidences == sorted(confidences, reverse=True) and sum(confidences) <= 1 + 1e-9


def test_fusion_caps_frames_and_candidates() -> None:
    fusion = CandidateFusion(max_frames=3, max_candidates=2, top_n=5)
    confidences = [0.9, 0.2, 0.8, 0.3, 0.7]
    for n, confidence in enumerate(confidences):
        fusion.add(
            detection(0, 0, TRUTH, candidates=[(TRUTH, confidence), (f"AB12CD{n}", confidence / 2)])
        )
    assert [d.confidence for d in fusion.detections] == [0.9, 0.8, 0.7]  # most confident, in order
    reading = fusion.reading()
    assert reading.text == TRUTH and len(reading.candidates) <= 2


# --- tracker ----------------------------------------------------------------------------------


def test_config_is_checked() -> None:
    with pytest.raises(ValidationError, match="provisional_after_frames"):
        TrackerConfig(min_frames=3, provisional_after_frames=2)
    with pytest.raises(ValidationError):
        TrackerConfig(max_mises=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        TrackerConfig(max_age_s=0)


def test_track_ids_belong_to_each_tracker() -> None:
    first, second = Tracker(TrackerConfig()), Tracker(TrackerConfig())
    run(first, [[detection(0, 0, "AB12CDE")]])
    run(second, [[detection(0, 0, "AB12CDE")]])
    assert first.live_tracks[0].track_id == second.live_tracks[0].track_id == 1


def test_two_crossing_cars_keep_their_ids_and_plates() -> None:
    tracker = Tracker(TrackerConfig())
    frames = [
        [detection(30.0 * n, 200.0, "AB12CDE"), detection(600.0 - 30.0 * n, 206.0, "XY98ZZZ")]
        for n in range(21)  # the boxes coincide at n = 10
    ]
    updates = run(tracker, frames)
    finish(tracker, updates)
    reports = ended(updates)
    assert sorted(r.reading.text for r in reports) == ["AB12CDE", "XY98ZZZ"]
    for report in reports:
        assert report.track.frames_seen == 21
        assert {d.text for d in report.track.detections} == {report.reading.text}
        assert report.end_reason is EndReason.LOST


def test_two_crossing_unread_plates_are_kept_apart_by_motion() -> None:
    # Same row, no text: only the velocity tells them apart. Just after they cross, each car's
    # detection is nearer the *other* car's last box, so a tracker without motion swaps them.
    def frames() -> list[list[Detection]]:
        return [
            [unread(30.0 * n, 200.0, "A"), unread(615.0 - 30.0 * n, 200.0, "B")] for n in range(21)
        ]

    def paths(tracker: Tracker) -> tuple[list[TrackerUpdate], dict[int, list[float]]]:
        """The updates, and each confirmed track's box x frame by frame (a car's moves one way)."""
        xs: dict[int, list[float]] = {}
        updates = []
        for n, detections in enumerate(frames()):
            updates.append(tracker.update(detections, frame_time=1_700_000_000.0 + n / FPS, frame_number=n))
            for track in updates[-1].tracks:  # live objects: their box changes with the next frame
                xs.setdefault(track.track_id, []).append(track.box.x)
        return updates, xs

    def one_way(xs: list[float]) -> bool:
        steps = np.diff(xs)
        return bool(np.all(steps > 0) or np.all(steps < 0))

    config = TrackerConfig()
    tracker = Tracker(config)
    updates, xs = paths(tracker)
    assert len(updates[-1].tracks) == 2
    assert all(one_way(x) for x in xs.values())  # never took the other car's box
    for track in updates[-1].tracks:
        assert track.frames_seen == 21 and track.detections == []  # matched, but nothing to fuse
    finish(tracker, updates)
    assert not ended(updates)  # nothing readable, nothing reported
    assert len([r for u in updates for r in u.suppressed]) == 2

    static = Tracker(config, motion_filter_factory=StaticFilter)
    assert not all(one_way(x) for x in paths(static)[1].values())


def test_frames_followed_unread_count_as_seen_but_fuse_only_the_frames_read() -> None:
    # a sure plate read on every 5th frame and followed by its box alone on the others
    # (cascade.plan.READ_NONE): its event counts every frame seen, its reading only those read
    def frame(n: int) -> Detection:
        if n % 5 == 0:
            return detection(20.0 * n, 300.0, "KL34MNO", confusions={3: ("8", 0.2)})
        return dataclasses.replace(unread(20.0 * n, 300.0, "-"), pattern=None)

    tracker = Tracker(TrackerConfig())
    updates = run(tracker, [[frame(n)] for n in range(23)])
    (reading,) = tracker.readings()
    assert (reading.reads, reading.unread) == (5, 2)
    every = Tracker(TrackerConfig())
    run(every, [[frame(n)] for n in range(0, 23, 5)])  # only the frames read, at their own times
    finish(tracker, updates)
    (report,) = ended(updates)
    assert report.reading.text == "KL34MNO" and report.track.frames_seen == 23
    assert len(report.track.detections) == 5  # the evidence: the frames read
    (alone,) = every.live_tracks
    assert report.reading == every._states[0].fusion.reading()  # the unread frames changed nothing
    assert alone.frames_seen == 5


def test_a_text_line_on_a_plate_followed_unread_is_still_its_fragment() -> None:
    # a state name's track lying on its plate: the plate's frames followed unread still count it
    # as a fragment of a read plate (its track's fused reading is sure), so it gives no event
    tracker = Tracker(TrackerConfig())
    frames = []
    for n in range(20):
        plate = detection(10.0 * n, 300.0, "KL34MNO", w=120.0, h=40.0)
        if n >= 5 and n % 5:
            plate = Detection(box=plate.box, presence=0.99, text="", confidence=0.0)
        frames.append([plate, detection(10.0 * n + 30, 290.0, "TEXAS", w=60.0, h=10.0)])
    updates = run(tracker, frames)
    finish(tracker, updates)
    assert [r.reading.text for r in ended(updates)] == ["KL34MNO"]


def test_occlusion_gap_gives_one_event() -> None:
    tracker = Tracker(TrackerConfig(max_misses=10))
    frames: list[list[Detection]] = []
    for n in range(25):
        hidden = 10 <= n < 15
        frames.append([] if hidden else [detection(20.0 * n, 300.0 + 4.0 * n, "KL34MNO")])
    updates = run(tracker, frames)
    finish(tracker, updates)
    (report,) = ended(updates)
    assert report.reading.text == "KL34MNO"
    assert (report.track.first_frame, report.track.last_frame) == (0, 24)
    assert report.track.frames_seen == 20


def test_lost_after_max_gap_seconds() -> None:
    tracker = Tracker(TrackerConfig(max_misses=1000, max_gap_s=1.0))
    updates = run(tracker, [[detection(0, 0, "KL34MNO")] for _ in range(5)])
    updates += run(tracker, [[] for _ in range(12)], start=5)
    (report,) = ended(updates)
    assert report.track.last_frame == 4 and not tracker.live_tracks


def test_a_camera_that_sends_no_frames_ends_its_tracks_after_max_gap_seconds() -> None:
    tracker = Tracker(TrackerConfig(max_gap_s=2.0))
    updates = run(tracker, [[detection(0, 0, "KL34MNO"), detection(400, 300, "AB12CDE")] for _ in range(5)]
                  + [[detection(400, 300, "AB12CDE")] for _ in range(5)])  # KL34MNO leaves after frame 4
    assert not ended(updates) and len(tracker.live_tracks) == 2
    frame_4, frame_9 = (1_700_000_000.0 + n / FPS for n in (4, 9))
    # the camera drops after frame 9: no frame comes to count misses on, time alone ends tracks
    assert not tracker.expire(frame_9 + 1.0, 9).ended
    first = tracker.expire(frame_4 + 2.05, 9)
    assert [r.reading.text for r in first.ended] == ["KL34MNO"] and len(tracker.live_tracks) == 1
    second = tracker.expire(frame_9 + 2.05, 9)
    assert [r.reading.text for r in second.ended] == ["AB12CDE"] and not tracker.live_tracks
    assert all(r.end_reason is EndReason.LOST for r in (*first.ended, *second.ended))


def test_a_tracker_taking_over_after_a_reload_does_not_report_a_parked_car_again() -> None:
    config = TrackerConfig(min_frames=3)
    before = Tracker(config)
    parked = [[detection(400, 300, "KL34MNO")] for _ in range(20)]
    updates = run(before, parked)
    (flushed,) = before.flush(1_700_000_000.0 + 19 / FPS, 19).ended  # the reload publishes it
    assert flushed.reading.text == "KL34MNO"

    def second_passage(take_over: bool) -> list[TrackReport]:
        after = Tracker(config)
        if take_over:
            after.take_recent_reports(before)
        later = run(after, parked, start=20)  # the car is still there
        finish(after, later)
        return ended(later)

    assert second_passage(take_over=False)  # a fresh tracker: the same car a second time
    assert second_passage(take_over=True) == []
    assert not ended(updates)


def test_stationary_car_gives_one_event() -> None:
    tracker = Tracker(TrackerConfig(max_age_s=5.0))
    rng = np.random.default_rng(3)
    frames = []
    for n in range(200):  # 20 s in view, 4 x max_age
        x, y = 400.0 + rng.normal(0, 1.5), 300.0 + rng.normal(0, 1.0)
        confusion = {6: ("F", 0.6)} if n % 7 == 0 else None  # occasional misreads
        frames.append([detection(x, y, "PQ56RST", confusions=confusion)])
    updates = run(tracker, frames)
    finish(tracker, updates)
    reports = ended(updates)
    assert [r.reading.text for r in reports] == ["PQ56RST"]
    assert reports[0].end_reason is EndReason.MAX_AGE
    assert reports[0].track.last_frame < 60  # reported at max age, not when the car left
    suppressed = [r for u in updates for r in u.suppressed]
    assert len(suppressed) >= 3 and all(r.continuation_of is not None for r in suppressed)


def test_a_parked_car_read_clearly_only_after_max_age_is_reported() -> None:
    tracker = Tracker(TrackerConfig(max_age_s=5.0))
    unclear = [("PQ56RST", 0.05)]  # under text_min_confidence: found, not yet read (dusk, glare)
    frames = [[detection(400.0, 300.0, "PQ56RST", candidates=unclear)] for _ in range(70)]
    frames += [[detection(400.0, 300.0, "PQ56RST")] for _ in range(40)]
    updates = run(tracker, frames)
    finish(tracker, updates)
    reports = ended(updates)
    assert [r.reading.text for r in reports] == ["PQ56RST"]
    assert reports[0].track.first_frame >= 50  # the continuation that read it


def test_different_car_replacing_a_parked_one_gets_its_own_event() -> None:
    tracker = Tracker(TrackerConfig(max_age_s=5.0))
    frames = [[detection(400.0, 300.0, "PQ56RST")] for _ in range(80)]
    frames += [[detection(402.0, 301.0, "ZZ99YYY")] for _ in range(30)]
    updates = run(tracker, frames)
    finish(tracker, updates)
    assert [r.reading.text for r in ended(updates)] == ["PQ56RST", "ZZ99YYY"]


def test_similar_plates_side_by_side_give_two_events() -> None:
    tracker = Tracker(TrackerConfig())
    frames = []
    for n in range(15):
        y = 200.0 + 5.0 * n
        frames.append(
            [
                detection(100.0, y, "AB12CDE", confusions={6: ("F", 0.3)}),
                detection(260.0, y, "AB12CDF", confusions={6: ("E", 0.3)}),
            ]
        )
    updates = run(tracker, frames)
    finish(tracker, updates)
    reports = sorted(ended(updates), key=lambda r: r.track.box.x)
    assert [r.reading.text for r in reports] == ["AB12CDE", "AB12CDF"]
    assert [r.track.box.x for r in reports] == [100.0, 260.0]


def test_a_partial_second_reading_of_a_tracked_plate_starts_no_track() -> None:
    frames: list[list[Detection]] = [[detection(100.0 + 5 * n, 300.0, "RR609OX")] for n in range(12)]
    for n in range(6, 10):  # a window over the plate's right half reads a fragment
        frames[n].append(detection(100.0 + 5 * n + 45, 302.0, "B680K", w=55.0, h=22.0))
    tracker = Tracker(TrackerConfig(min_frames=3))
    updates = run(tracker, frames)
    finish(tracker, updates)
    assert [r.reading.text for r in ended(updates)] == ["RR609OX"]

    # The same fragment beside the plate (no overlap) is something else and is tracked.
    for n in range(6, 10):
        frames[n][1] = detection(100.0 + 5 * n + 200, 302.0, "B680K", w=55.0, h=22.0)
    tracker = Tracker(TrackerConfig(min_frames=3))
    updates = run(tracker, frames)
    finish(tracker, updates)
    assert sorted(r.reading.text for r in ended(updates)) == ["B680K", "RR609OX"]


def test_garbled_unconfident_reads_do_not_split_a_track() -> None:
    # A small plate read differently in every frame, each reading near-certainly wrong.
    garbled = ["RR6090X", "B6090X", "860NX", "BR06K", "M00N0X", "HR096K", "RU0N", "6UH6K", "R0P608"]
    frames = [[detection(100.0 + 3 * n, 300.0, text, candidates=[(text, 0.01)])]
              for n, text in enumerate(garbled)]
    for min_confidence in (0.1, 0.0):  # 0.0: every reading takes part in the text gate
        tracker = Tracker(TrackerConfig(min_frames=3, min_plate_length=1, text_min_confidence=min_confidence))
        updates = run(tracker, frames)
        finish(tracker, updates)
        track_ids = {track.track_id for u in updates for track in (*u.tracks, *u.tentative)}
        assert (len(track_ids) == 1) == (min_confidence > 0), track_ids


def test_a_state_name_tracked_before_its_plate_gives_no_event() -> None:
    # A US plate entering the image: its state name is found (and read) for four frames before
    # the plate itself, then both are found every frame, the name lying on the plate.
    frames = []
    for n in range(25):
        x = 40.0 + 6 * n
        band = detection(x + 35, 345.0, "MARYLAND", w=60.0, h=12.0)
        frames.append([band] if n < 4 else [detection(x, 343.0, "Q24663", w=130.0, h=62.0), band])
    tracker = Tracker(TrackerConfig())
    updates = run(tracker, frames)
    finish(tracker, updates)
    assert [r.reading.text for r in ended(updates)] == ["Q24663"]
    assert [r.reading.text for u in updates for r in u.suppressed] == ["MARYLAND"]


def test_a_state_name_outliving_its_plate_at_the_image_edge_gives_no_event() -> None:
    # The plate is tracked, then its state name is found on it too; the plate leaves the image at
    # its edge and is no longer found, while the name, still whole, is found for three more
    # frames where the plate's motion says the plate is.
    frames = []
    for n in range(15):
        x = 700.0 + 6 * n
        plate = [detection(x, 343.0, "71BHX3", w=125.0, h=60.0)] if n < 12 else []
        band = [detection(x + 35, 345.0, "GEORGIA", w=52.0, h=15.0)] if n >= 3 else []
        frames.append(plate + band)
    tracker = Tracker(TrackerConfig())
    updates = run(tracker, frames)
    finish(tracker, updates)
    assert [r.reading.text for r in ended(updates)] == ["71BHX3"]
    assert not [r for u in updates for r in u.suppressed]


def test_a_state_name_just_above_a_plate_box_that_sits_low_gives_no_event() -> None:
    # Clip 2, frames 314-326, as the detector found them: the box of plate QEN5952 starts below the
    # state name printed above its characters, so the name's box barely overlaps it. The plate leaves
    # the image at its left edge at frame 324; the name is found in frames 318-325.
    plate = {314: (88, 316, 119, 58), 315: (79, 318, 126, 58), 316: (73, 321, 123, 56),
             317: (63, 321, 126, 62), 318: (55, 321, 129, 65), 319: (44, 323, 133, 67),
             320: (34, 330, 135, 61), 321: (25, 333, 136, 62), 322: (17, 335, 141, 64),
             323: (7, 337, 141, 67)}
    name = {318: (97, 319, 47, 10), 319: (90, 320, 47, 10), 321: (73, 325, 47, 10),
            322: (64, 327, 49, 11), 324: (32, 336, 50, 11), 325: (6, 342, 54, 12)}
    frames = []
    for n in range(300, 327):
        found = []
        if n in plate or n < 314:
            x, y, w, h = plate.get(n, (88 + 6 * (314 - n), 316 - (314 - n) // 2, 119, 58))
            found.append(detection(x, y, "QEN5952", w=w, h=h))
        if n in name:
            x, y, w, h = name[n]
            found.append(detection(x, y, "ARIZONA", w=w, h=h))
        frames.append(found)
    tracker = Tracker(TrackerConfig())
    updates = run(tracker, frames, start=300)
    finish(tracker, updates)
    assert [r.reading.text for r in ended(updates)] == ["QEN5952"]


def test_a_state_name_found_before_its_plate_enters_the_image_gives_no_event() -> None:
    # Clip 2 (2026-11-24, anprd-v6), frames 736-780, as the detector found them: an overtaking
    # car's plate G25442 enters the image at its left edge. Its state name, whole first, is found
    # in frames 740-741, the plate from frame 743 on, and the name once more on the plate in 745.
    plate = {743: (5, 311, 139, 74), 744: (16, 312, 135, 67), 745: (24, 310, 133, 64),
             746: (33, 309, 130, 63), 747: (40, 306, 128, 63), 748: (49, 306, 125, 61),
             749: (57, 303, 122, 61), 750: (64, 303, 122, 59), 751: (71, 301, 121, 58),
             752: (79, 300, 116, 56), 753: (85, 297, 116, 59), 754: (91, 296, 114, 57)}
    name = {740: (10, 322, 54, 18), 741: (31, 317, 53, 18), 745: (64, 310, 50, 15)}
    frames = []
    for n in range(736, 781):
        found = []
        if n >= 743:
            x, y, w, h = plate.get(n, (91 + 6 * (n - 754), 296 - (n - 754) // 2, 114 - (n - 754), 57))
            found.append(detection(x, y, "G25442", w=w, h=h))
        if n in name:
            x, y, w, h = name[n]
            found.append(detection(x, y, "IDAHO", w=w, h=h))
        frames.append(found)
    for min_frames in (3, 1):  # the plate's track is confirmed a few frames on, or at once
        tracker = Tracker(TrackerConfig(min_frames=min_frames))
        updates = run(tracker, frames, start=736)
        finish(tracker, updates)
        assert [r.reading.text for r in ended(updates)] == ["G25442"], min_frames


def _stopping_car(junk_frames: set[int]) -> list[list[Detection]]:
    """Bundled clip, frames 627-775: plate DMUHU759 on a stopping car, and in `junk_frames` a box
    round the car's rear, read as "C" at 0.01-0.13, over the plate. Plate boxes are the
    detector's at the key frames, interpolated between them."""
    keys = {627: (520, 264, 49, 12), 660: (562, 288, 72, 18), 690: (625, 325, 109, 28),
            700: (637, 335, 115, 28), 755: (642, 336, 118, 30), 775: (767, 410, 190, 45)}
    key_frames = sorted(keys)
    frames = []
    for n in range(627, 776):
        x, y, w, h = (float(np.interp(n, key_frames, [keys[k][i] for k in key_frames])) for i in range(4))
        found = [detection(x, y, "DMUHU759", w=w, h=h)]
        if n in junk_frames:  # the car's rear, as the detector boxed it round the plate
            found.append(detection(x - 1.14 * w, y - 3.5 * h, "C", candidates=[("C", 0.05)],
                                   w=3.27 * w, h=4.1 * h))
        frames.append(found)
    return frames


def test_a_large_unread_box_over_a_plate_does_not_make_the_plate_its_text_line() -> None:
    # 2026-11-24 (anprd-v6): the junk box was found over the plate in 53 frames from 641 on and
    # confirmed at 656. The plate's older, shorter track lay on it then; it is still the plate to
    # report.
    junk_frames = {641, 652, 653, 656, 661, 662, 673, 679, 682, 690, 691, 694, 695, *range(700, 720),
                   722, 724, 730, 731, 734, 735, 739, 740, 741, 743, 745, *range(747, 756)}
    tracker = Tracker(TrackerConfig())
    updates = run(tracker, _stopping_car(junk_frames), start=627)
    finish(tracker, updates)
    assert [r.reading.text for r in ended(updates)] == ["DMUHU759"]


def test_a_plate_under_a_large_unread_box_most_of_its_life_is_not_its_fragment() -> None:
    # 2026-12-04 (anprd-v7, pre-filter threshold -0.25): with more pre-filter regions the junk box
    # was found in most frames, so the plate spent most of its life lying on a larger matched box
    # and was dropped as that box's fragment. Only a box read as a plate makes a box lying on it a
    # fragment.
    tracker = Tracker(TrackerConfig())
    updates = run(tracker, _stopping_car(set(range(641, 776))), start=627)
    finish(tracker, updates)
    assert [r.reading.text for r in ended(updates)] == ["DMUHU759"]


def test_a_stopped_car_whose_plate_is_found_on_and_off_gives_one_event() -> None:
    # Clip 3 (2026-11-24, anprd-v6): a car stopped with its plate ~100 px wide was found in
    # bursts, its track breaking in every gap longer than max_misses. Each gap is shorter than
    # same_plate_window_s, the whole stop longer, and the last burst is the longest.
    bursts = [(0, 40), (70, 110), (140, 180), (210, 400)]
    frames = [[detection(150.0, 290.0, "GIF1656")] if any(a <= n <= b for a, b in bursts) else []
              for n in range(401)]
    config = TrackerConfig()
    assert config.max_misses < 30 < config.same_plate_window_s * FPS < 210
    tracker = Tracker(config)
    updates = run(tracker, frames)
    finish(tracker, updates)
    assert [r.reading.text for r in ended(updates)] == ["GIF1656"]
    assert len([r for u in updates for r in u.suppressed]) == 3


def test_a_low_confidence_read_cannot_hand_a_departing_plate_s_track_to_an_arriving_one() -> None:
    # Clip 4 (2026-11-24, anprd-v6), frames 470-540 as the detector found them (every other
    # frame): TPI1W pulls away to the left until frame 486; PNQ7643 appears 60 px to its right at
    # frame 492, read at 0.06 (too low to gate by text), then read well. That first read used to
    # become the old track's latest text, and the new plate's good reads then passed the text gate.
    frames: list[list[Detection]] = []
    for n in range(470, 541):
        found = []
        if n <= 486:
            found.append(detection(586 - 1.4 * (n - 470), 291 - 0.9 * (n - 470), "TPI1W",
                                   w=58 - 0.6 * (n - 470), h=14))
        if n == 492:
            found.append(detection(624, 280, "PNO7643", candidates=[("PNO7643", 0.064)], w=41, h=24))
        elif n >= 495:
            found.append(detection(626 + 1.7 * (n - 495), 282 + 0.5 * (n - 495), "PNQ7643",
                                   candidates=[("PNQ7643", 0.6)], w=44 + 0.6 * (n - 495), h=24))
        frames.append(found)
    tracker = Tracker(TrackerConfig())
    updates = run(tracker, frames, start=470)
    finish(tracker, updates)
    assert sorted(r.reading.text for r in ended(updates)) == ["PNQ7643", "TPI1W"]


def test_one_narrow_box_does_not_throw_the_size_gate_off_a_departing_plate() -> None:
    # Clip 4 (2026-11-24, anprd-v6), frames 20-70: a departing plate's box narrowed from 99 to
    # 75 px in one frame (the detector boxed it at another pyramid level), then the plate was
    # missed for three frames and came back 79-92 px wide. The width velocity from that one jump
    # had the predicted box at 48 px, beyond the size gate, and the plate became two tracks and two
    # events (its J, drawn as a bare bar, fused to I in one and to 1 in the other).
    keys = {20: (9, 365, 161, 81), 44: (209, 307, 99, 51), 45: (216, 306, 75, 46), 49: (247, 300, 79, 47),
            50: (237, 299, 92, 47), 70: (306, 279, 71, 36)}
    spans = [(20, 44), (45, 45), (49, 49), (50, 70)]
    frames = []
    for n in range(20, 71):
        span = next((a, b) for a, b in (*spans, (n, n)) if a <= n <= b)
        if n in (46, 47, 48):
            frames.append([])
            continue
        a, b = span
        box = tuple(float(np.interp(n, [a, b], [keys[a][i], keys[b][i]])) for i in range(4))
        frames.append([detection(box[0], box[1], "64IEF8" if n < 45 else "641EF8", w=box[2], h=box[3])])
    tracker = Tracker(TrackerConfig())
    updates = run(tracker, frames, start=20)
    finish(tracker, updates)
    assert len(ended(updates)) == 1, [r.reading.text for r in ended(updates)]


def test_a_smaller_object_beside_a_plate_cannot_take_over_its_track() -> None:
    # The plate is missed for a few frames while an unread tail light shows beside it, within the
    # centre-distance gate; then the plate comes back where its motion says.
    def frames() -> list[list[Detection]]:
        plate = [[detection(100.0 + 4 * n, 300.0, "EUP110A")] for n in range(12)]
        light = [[detection(240.0 + 4 * n, 280.0, "9", candidates=[("9", 0.01)], w=50.0, h=14.0)]
                 for n in range(12, 15)]
        later = [[detection(100.0 + 4 * n, 300.0, "EUP110A")] for n in range(15, 30)]
        return plate + light + later

    for ratio, tracks in ((1.5, 1), (100.0, 2)):  # 100: no size gate, the light takes the track
        tracker = Tracker(TrackerConfig(max_size_ratio=ratio, same_plate_window_s=0))
        updates = run(tracker, frames())
        finish(tracker, updates)
        plate_tracks = {track.track_id for u in updates for track in (*u.tracks, *u.tentative)
                        if any(d.text == "EUP110A" for d in track.detections)}
        assert len(plate_tracks) == tracks, (ratio, plate_tracks)
        assert [r.reading.text for r in ended(updates)] == ["EUP110A"] * tracks


def test_a_plate_whose_box_height_jumps_stays_one_track() -> None:
    # The detector's box height is noisy: in some frames it takes in a row above the text and
    # doubles, while the width stays. Those frames belong to the plate's track, not a new one.
    frames = [[detection(100.0 + 4 * n, 300.0 - (12.0 if n % 4 == 3 else 0.0), "EUP110A",
                         h=(40.0 if n % 4 == 3 else 18.0), w=90.0 + n)] for n in range(24)]
    tracker = Tracker(TrackerConfig(same_plate_window_s=0))
    updates = run(tracker, frames)
    finish(tracker, updates)
    assert len({track.track_id for u in updates for track in (*u.tracks, *u.tentative)}) == 1
    assert [r.reading.text for r in ended(updates)] == ["EUP110A"]


def test_an_object_never_read_with_confidence_gives_no_event() -> None:
    # A sign found in every frame and read as different junk, each reading near-certainly wrong:
    # fusion still ranks a string first, but nothing was ever read.
    junk = ["4V4N", "8V4N", "AVGN", "XVON", "8VDW", "4VD4W", "49949", "4VDJN"] * 3
    for confidence, events in ((0.02, 0), (0.5, 1)):
        frames = [[detection(340.0, 110.0, text, candidates=[(text, confidence)], w=50.0, h=24.0)]
                  for text in junk]
        tracker = Tracker(TrackerConfig(text_min_confidence=0.1, max_text_distance=1.0))
        updates = run(tracker, frames)
        finish(tracker, updates)
        assert len(ended(updates)) == events, confidence
        assert len(ended(updates)) + len([r for u in updates for r in u.suppressed]) == 1


def test_a_broken_track_reading_the_same_plate_soon_after_gives_no_second_event() -> None:
    def passage(plate: str, gap_frames: int, second: str | None = None) -> list[str]:
        # The plate jumps across the image between two stretches (a track that breaks).
        frames = [[detection(100.0 + 4 * n, 300.0, plate)] for n in range(15)]
        frames += [[] for _ in range(gap_frames)]
        frames += [[detection(600.0 + 8 * n, 420.0, second or plate, w=150.0, h=38.0)] for n in range(15)]
        tracker = Tracker(TrackerConfig(same_plate_window_s=5.0))
        updates = run(tracker, frames)
        finish(tracker, updates)
        return [r.reading.text for r in ended(updates)]

    assert passage("TEO3506", gap_frames=3) == ["TEO3506"]  # 0.3 s apart: one passage
    assert passage("TEO3506", gap_frames=80) == ["TEO3506", "TEO3506"]  # 8 s apart: passing again
    assert passage("AB12CDE", gap_frames=3, second="AB12CDF") == ["AB12CDE", "AB12CDF"]  # another car


def test_one_frame_false_positive_gives_no_event() -> None:
    tracker = Tracker(TrackerConfig(min_frames=3))
    frames: list[list[Detection]] = [[detection(50.0 + 10 * n, 400.0, "CAR1234")] for n in range(8)]
    frames[4] = [*frames[4], detection(900.0, 50.0, "TREE777")]  # one-frame false positive
    updates = run(tracker, frames)
    finish(tracker, updates)
    assert [r.reading.text for r in ended(updates)] == ["CAR1234"]
    assert not [r for u in updates for r in u.suppressed]
    assert sum(len(u.confirmed) for u in updates) == 1


def test_confirmation_and_provisional_transitions() -> None:
    tracker = Tracker(TrackerConfig(min_frames=2, provisional_after_frames=4))
    updates = run(tracker, [[detection(10.0 * n, 0, "GH78IJK", pattern="uk")] for n in range(6)])
    assert [len(u.confirmed) for u in updates] == [0, 1, 0, 0, 0, 0]
    assert [len(u.provisional) for u in updates] == [0, 0, 0, 1, 0, 0]
    assert [len(u.tentative) for u in updates[:2]] == [1, 0]
    (report,) = updates[3].provisional
    assert report.reading.text == "GH78IJK" and report.pattern == "uk"
    assert report.track.frames_seen == 4
    flushed = tracker.flush(frame_time=updates[-1].frame_time, frame_number=6)
    assert [r.end_reason for r in flushed.ended] == [EndReason.FLUSHED]
    assert not tracker.live_tracks


def test_motion_filters_predict() -> None:
    moving = AlphaBetaFilter(Box(0, 0, 100, 25), 0.0)
    moving.update(Box(10, 0, 100, 25), 1.0)
    assert moving.predict(2.0).x == pytest.approx(20.0)
    static = StaticFilter(Box(0, 0, 100, 25), 0.0)
    static.update(Box(10, 0, 100, 25), 1.0)
    assert static.predict(5.0) == Box(10, 0, 100, 25)


def test_injected_motion_filter_is_used() -> None:
    made: list[StaticFilter] = []

    def factory(box: Box, time: float) -> StaticFilter:
        made.append(StaticFilter(box, time))
        return made[-1]

    tracker = Tracker(TrackerConfig(), motion_filter_factory=factory)
    run(tracker, [[detection(0, 0, "AB12CDE")], [detection(5, 0, "AB12CDE")]])
    assert len(made) == 1
    assert made[0].predict(99.0) == Box(5, 0, 100, 25)


def test_normalized_edit_distance() -> None:
    assert normalized_edit_distance("", "") == 0.0
    assert normalized_edit_distance("AB12CDE", "AB12CDF") == pytest.approx(1 / 7)
    assert normalized_edit_distance("B12CDE", "AB12CDE") == pytest.approx(1 / 7)
    assert normalized_edit_distance("ABC", "") == 1.0
