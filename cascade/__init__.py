"""The search cascade: every stage that decides where the detection network looks.

- `cascade.plan`: `SearchPlan`, the one interface the detector takes (`PlateDetector.detect(image,
  plan)`), and `still_plan`, what a still image gets.
- `cascade.proposer`: the proposal network, proposals for new plates with each plate's predicted
  size (training: `python -m cascade.train_proposer`).
- `cascade.hog`: the HOG + linear SVM pre-filter, the older proposal stage (training:
  `python -m cascade.train_hog`).
- `cascade.motion`: the motion gate (frame differencing at low resolution, outside the mask).
- `cascade.tracks`: track-guided search around each live track's predicted plate.
- `cascade.frame`: `FrameCascade`, one camera's plan per video frame, with the scheduled
  whole-frame pass.
- `cascade.models`: where model folders are found, and `ModelError`.

The cascade never imports the detector; the detector imports the cascade.
"""

from cascade.frame import FrameCascade
from cascade.plan import WHOLE_FRAME, Region, SearchPlan, still_plan

__all__ = ["WHOLE_FRAME", "FrameCascade", "Region", "SearchPlan", "still_plan"]
