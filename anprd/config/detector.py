"""Detector settings: which model, how far the pyramid reaches, thresholds, plate patterns and the
optional HOG pre-filter."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from anprd.config.base import AnprdBaseModel

__all__ = ["DetectorConfig"]


class DetectorConfig(AnprdBaseModel):
    model: str = Field("models/anprd-v10", description="Model folder (model.json + weights); relative "
                       "paths resolve against the config file, then the anprd install.")
    presence_threshold: float = Field(0.8, gt=0, lt=1, description="Window presence score for a hit "
                                      "(the seed used 0.99); hits only propose plates, verify_threshold "
                                      "and min_confidence decide (docs/accuracy.md).")
    verify_threshold: float = Field(0.8, ge=0, lt=1, description="Presence score a grouped plate must "
                                    "keep when re-read on a crop centred on it, framed as in training; "
                                    "drops loose hits.")
    min_plate_width: float = Field(60, ge=16, description="Narrowest plate to find, in pixels; sets the "
                                   "largest pyramid scale (small values upsample the image and cost time).")
    max_plate_width: float = Field(640, ge=32, description="Widest plate to find, in pixels; sets the "
                                   "smallest pyramid scale.")
    pyramid_step: float = Field(1.26, gt=1.05, le=2.0, description="Scale factor between pyramid levels. "
                                "A window counts a plate as present at 60-80% of its width (a 1.33x "
                                "band), so steps above 1.33 (the seed's sqrt 2) leave plate widths that "
                                "no level sees well; 1.26 = 2^(1/3).")
    group_iou: float = Field(0.3, gt=0, lt=1, description="Hits whose plate boxes overlap the strongest "
                             "hit's box more than this are one plate with it.")
    min_confidence: float = Field(0.01, ge=0, le=1, description="Drop plates whose reading probability "
                                  "is below this: windows that look like a plate but read as nothing "
                                  "(grilles, signs, lamps) read at < 0.01, most plates above it; 0 "
                                  "keeps every box, read or not (docs/accuracy.md).")
    read_scales: list[float] = Field(default_factory=lambda: [0.9, 1.0, 1.1], description="Second "
                                     "reading pass: the refined plate box is read again on crops "
                                     "scaled by these factors (by each plate reader), and a text's "
                                     "probability is its geometric mean over all reads (more plates "
                                     "read right, ~1.5 ms per crop); [] reads each plate once.")
    reader: Literal["auto", "window"] = Field("auto", description="Who reads the text: 'auto' uses the "
                                              "model's plate readers (second networks on a tight crop of "
                                              "each plate, docs/design.md) when the model folder "
                                              "has them; 'window' reads with the detector's own window "
                                              "network.")
    read_inverted: bool = Field(True, description="Also read each plate inverted and keep the polarity "
                                "the reader is surer of: light text on a dark plate (black French and "
                                "UK historic plates, Brazilian hire plates, taxis) then reads like dark "
                                "on light. Doubles the plate reader's work (a few ms per plate); "
                                "docs/accuracy.md.")
    inverted_min_confidence: float = Field(0.9, ge=0, le=1, description="An inverted reading is kept "
                                           "only at this confidence or above, else the plate's reading "
                                           "as seen is: dealer frames and city strips print light text "
                                           "on dark too, and read so-so inverted (chosen on synthetic "
                                           "validation scenes, docs/accuracy.md).")
    top_n: int = Field(5, ge=1, le=20, description="Candidates reported per plate.")
    patterns: dict[str, str] = Field(default_factory=dict, description="Named plate patterns, e.g. "
                                     "{uk: '@@##@@@'} (@ letter, # digit, ? either); a reading that fits "
                                     "one, with enough probability, is preferred and fixes O/0, I/1.")
    pattern_min_ratio: float = Field(0.01, gt=0, le=1, description="A pattern reading is used when its "
                                     "probability is at least this fraction of the best free reading.")
    countries: list[str] = Field(default_factory=list, description="Countries whose plates the camera "
                                 "sees, as ISO 3166-1 alpha-2 codes in lower case ('uk' is taken for "
                                 "'gb'): their formats (anprd/styles/*.yaml) become a prior that turns "
                                 "look-alikes (I/1, O/0/D, B/8, S/5, Z/2, G/6) into what the format "
                                 "demands and drops band letters at the ends; the event's `pattern` "
                                 "names the country. Empty: readings are left as read.")
    model_formats: bool = Field(True, description="Use the plate formats a fine-tuned model folder "
                                "carries (model.json `formats`: how often each format occurs among the "
                                "plates it was fine-tuned on; `anprd finetune` stores them unless they "
                                "read fewer of its training plates, each left out in turn) as a soft "
                                "prior: a format seen often outweighs an unsure look-alike. No effect "
                                "on a model without.")
    runtime: Literal["auto", "onnxruntime", "openvino", "tensorflow"] = Field(
        "auto", description="What runs the networks: 'auto' uses the model folder's exported ONNX files "
        "(`make export`) with ONNX Runtime (else OpenVINO when installed), and TensorFlow for a network "
        "without a current export (a fine-tuned reader); naming one makes a missing export an error. "
        "Only 'tensorflow' (or a network left on it) imports TensorFlow (docs/speed.md).")
    precision: Literal["auto", "float32", "int8"] = Field(
        "auto", description="Which exported files a fast runtime loads: 'auto' is float32 (the "
        "TensorFlow model's figures); 'int8' the statically quantised files, faster with OpenVINO "
        "but 1-4 points lower read rates (docs/speed.md). TensorFlow always runs the float weights.")
    device: Literal["auto", "cpu", "gpu"] = Field("auto", description="'auto' uses a GPU when one is "
                                                   "usable: ONNX Runtime's GPU build with CUDA (`make "
                                                   "setup GPU=1`), or TensorFlow's when TensorFlow "
                                                   "serves; 'gpu' fails when the runtime sees none.")
    threads: int = Field(0, ge=0, description="Threads per network call (0 = all cores).")
    prefilter: Literal["none", "hog", "proposer"] = Field(
        "hog", description="Region proposals before the CNN: 'proposer' runs the small proposal "
        "network (cascade/proposer.py) over an octave pyramid at half resolution and scans only its "
        "regions, at the pyramid levels their size calls for; 'hog' does the same with the HOG + "
        "linear SVM pre-filter (fewer false positives and a better `eu` read rate than the whole "
        "pyramid, and faster; docs/speed.md); 'none' scans the whole pyramid.")
    prefilter_model: str | None = Field(None, description="The pre-filter's folder, resolved like "
                                        "`model`; null: models/hog-v1 for 'hog' (hog.yml + hog.json), "
                                        "models/proposer-v1 for 'proposer' (proposer.onnx + "
                                        "proposer.json).")
    prefilter_threshold: float = Field(-0.25, ge=-3, le=3, description="Score a pre-filter window "
                                       "needs to propose a region, over the model's calibrated "
                                       "operating point (HOG: SVM margin, 95% of plates covered; "
                                       "proposer: logit, 99% of generated scenes' plates searched). The "
                                       "default -0.25 covers more tilted and 2:1 plates with HOG "
                                       "(docs/speed.md); lower finds more plates but proposes more "
                                       "regions (more time).")
    prefilter_full_scan_width: float | None = Field(
        None, ge=16, description="With a pre-filter, the pyramid levels for plates at least this wide "
        "(pixels) are also scanned whole: they are small images, so cheap. Null: 120 with 'hog' (its "
        "template misses large tilted plates, docs/speed.md), none with 'proposer' (its octave levels "
        "cover every plate width). Above max_plate_width only the pre-filter's regions are scanned.")

    @property
    def full_scan_width(self) -> float:
        """`prefilter_full_scan_width`, or the chosen pre-filter's default (above every plate: none)."""
        if self.prefilter_full_scan_width is not None:
            return self.prefilter_full_scan_width
        return self.max_plate_width + 1 if self.prefilter == "proposer" else 120.0

    @property
    def prefilter_folder(self) -> str:
        """`prefilter_model`, or the shipped folder of the chosen pre-filter."""
        if self.prefilter_model is not None:
            return self.prefilter_model
        return "models/proposer-v1" if self.prefilter == "proposer" else "models/hog-v1"

    @field_validator("read_scales")
    @classmethod
    def _check_read_scales(cls, scales: list[float]) -> list[float]:
        for factor in scales:
            if not 0.5 <= factor <= 2.0:
                raise ValueError(f"each read scale must be between 0.5 and 2 ({factor} is not)")
        return scales

    @field_validator("patterns")
    @classmethod
    def _check_patterns(cls, patterns: dict[str, str]) -> dict[str, str]:
        from anprd.ctc import parse_pattern

        for name, spec in patterns.items():
            parse_pattern(name, spec)
        return patterns

    @field_validator("countries")
    @classmethod
    def _check_countries(cls, codes: list[str]) -> list[str]:
        from anprd.styles import country_code

        return list(dict.fromkeys(country_code(code) for code in codes))

    @model_validator(mode="after")
    def _check_plate_widths(self) -> DetectorConfig:
        if self.min_plate_width >= self.max_plate_width:
            raise ValueError(f"min_plate_width ({self.min_plate_width}) must be below max_plate_width "
                             f"({self.max_plate_width})")
        return self
