# anprd: see README.md. `make setup` once, then `make test`, `make run`, `make bench`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PREFIX ?= /usr/local
DESTDIR ?=

.PHONY: setup test lint run bench bench-clips eval train streets-check hog proposer clip install clean export faults soak

$(VENV)/.installed: pyproject.toml scripts/install_system_deps.sh
	bash scripts/install_system_deps.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,export]'
	touch $@

# GPU=1: ONNX Runtime's CUDA build in place of the CPU one (docs/speed.md, "GPU hosts"); both
# install the module `onnxruntime`, so the CPU build goes and the GPU build is laid again over it
setup: $(VENV)/.installed
ifdef GPU
	$(PY) -m pip install --quiet -e '.[dev,export,gpu]'
	$(PY) -m pip uninstall --quiet -y onnxruntime
	$(PY) -m pip install --quiet --force-reinstall --no-deps 'onnxruntime-gpu==1.31.1'
endif

test: setup
	$(VENV)/bin/ruff check anprd train cascade tests scripts
	$(PY) -m pytest -q tests

lint: setup
	$(VENV)/bin/ruff check anprd train cascade tests scripts

run: setup
	bash scripts/make_run.sh

# the whole pyramid, today's HOG path and the video cascade side by side; ends with one JSON line
bench: setup
	$(PY) -m anprd.bench

# the bench clips (1280x720, 1920x1080, 30 fps) into data/bench/; `make bench` renders them when missing
bench-clips: setup
	$(PY) -m train.clip --bench

# The fault table against real processes on loopback (scripts/faults.py): about 3 min, at most 10.
faults: setup
	$(PY) scripts/faults.py

# RSS over 20,000 frames of the looped clip through the replay pipeline (about an hour); not in CI.
soak: setup
	$(PY) scripts/soak.py

eval: setup
	$(PY) -m anprd.cli eval ../shared/data/real/eu
	$(PY) -m anprd.cli eval ../shared/data/real/us

# Reproduces models/anprd-v10 (see docs/training.md): the anprd-v9 recipe (three detector stages
# and plate reader r9 on the three generic plate families, about 2 h 40 min on 2 idle cores), then
# both networks fine-tuned with national plate styles (--styled 0.6: anprd/styles, procedural plate
# fonts, plates on cars; about 30 min on idle cores) and the reader's confidence calibrated on
# synthetic scenes of plates in lettering training never uses (a few minutes). A stopped run continues with `--resume` on its run
# folder; then run the lines after it by hand.
STREETS := ../shared/data/streets
STREETS_OPT = $(if $(wildcard $(STREETS)),--backgrounds $(STREETS),)
streets-check:
	@test -d $(STREETS) || echo "make: $(STREETS) not found: training on scikit-image's bundled" \
		"photos alone, so the model will differ from the shipped one (docs/training.md)" >&2
train: setup streets-check
	$(PY) -m train.train --run runs/v1 --steps 5000 --seed 1 --val-every 500 $(STREETS_OPT)
	$(PY) -m train.train --run runs/v2 --init-from runs/v1 --steps 7000 --lr 2e-3 --seed 2 \
		--val-every 1000 $(STREETS_OPT)
	$(PY) -m train.train --run runs/v3 --init-from runs/v2 --steps 3000 --lr 1e-3 --seed 3 \
		--val-every 500 $(STREETS_OPT) --balance-backgrounds
	$(PY) -m train.train --run runs/v10 --init-from runs/v3 --steps 1500 --lr 1e-3 --seed 4 \
		--val-every 500 $(STREETS_OPT) --balance-backgrounds --styled 0.6
	$(PY) -m train.train --run runs/v10 --export models/anprd-v10
	$(PY) -m train.train_reader --run runs/r9 --steps 12000 --seed 31 --val-every 1000 $(STREETS_OPT)
	$(PY) -m train.train_reader --run runs/r13 --init-from runs/r9 --steps 3000 --lr 1e-3 --seed 41 \
		--val-every 500 $(STREETS_OPT) --styled 0.6
	$(PY) -m train.train_reader --run runs/r13 --export models/anprd-v10
	$(PY) -m train.gen --scenes --on-cars --unseen-fonts --styled 0.6 --difficulty 1.0 --count 200 \
		--out data/synth-cars-unseen --seed 242424 $(STREETS_OPT)
	$(PY) -m train.calibrate --model models/anprd-v10 data/synth-cars-unseen
	$(PY) -m train.export --model models/anprd-v10 $(STREETS_OPT)

# The inference runtime's files: MODEL's networks as float32 and int8 ONNX (train/export.py), int8
# calibrated on street frames and synthetic plates; a model folder without them runs on TensorFlow.
MODEL ?= models/anprd-v10
export: setup
	$(PY) -m train.export --model $(MODEL) $(STREETS_OPT)

# Reproduces models/hog-v1, the HOG pre-filter (see cascade/README.md): ~7 min on 2 cores.
hog: setup streets-check
	$(PY) -m cascade.train_hog --out models/hog-v1 --seed 1 $(STREETS_OPT)

# models/proposer-v1, the video cascade's proposal network (cascade/README.md): about 11 min on 2 cores
proposer: setup streets-check
	$(PY) -m cascade.train_proposer --run runs/proposer-v1 --seed 1 --windows 200000 --epochs 10 \
		--margin-quantile 0.99 --target-recall 0.99 $(STREETS_OPT)
	$(PY) -m cascade.train_proposer --run runs/proposer-v1 --export models/proposer-v1

clip: setup
	$(PY) -m train.clip --seed 1 --out samples/clip.mp4 --truth samples/clip.truth.csv

install: setup
	PREFIX=$(PREFIX) DESTDIR=$(DESTDIR) bash scripts/install.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache data runs
