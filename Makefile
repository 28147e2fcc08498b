# AlexNet (Krizhevsky, Sutskever & Hinton 2012) in Keras 3 -- see README.md.
PRESET  ?= imagenette
# Empty: the preset's own count (3; the smoke preset 2: reproduce.config.default_seeds).
SEEDS   ?=
NAME    ?=
DATA_DIR ?=
RUNS    ?= runs
# An empty RUNS= is unset: as a folder it would be this one, and runs would land
# among the sources (override: a command-line value beats a plain assignment).
override RUNS := $(if $(strip $(RUNS)),$(strip $(RUNS)),runs)
BACKEND ?= tensorflow
SET     ?=
WORKERS ?= 1
VENV    ?= .venv
PY      := $(if $(wildcard $(VENV)/bin/python),$(VENV)/bin/python,python3)

# DATA_DIR (a folder in ImageFolder layout or an archive of one) replaces the
# preset's TFDS source. It is one shell word, quoted, so a path may hold spaces
# (make's own path functions split at them); a relative path is made absolute.
quote    = '$(subst ','\'',$(1))'
DATA_ABS := $(if $(filter /%,$(DATA_DIR)),$(DATA_DIR),$(CURDIR)/$(DATA_DIR))
DATA_SET := $(if $(DATA_DIR),$(call quote,data.source=$(DATA_ABS)),)
OVERRIDES := $(strip $(DATA_SET) $(SET))
SETARG  := $(if $(OVERRIDES),--set $(OVERRIDES),)
SEEDARG := $(if $(strip $(SEEDS)),--seeds $(strip $(SEEDS)),)
RUN     := KERAS_BACKEND=$(BACKEND) REPRODUCE_RUNS=$(RUNS) $(PY)

.PHONY: help install lint format test test-fast test-tf test-jax train reproduce ablation report publish bench export tensorboard

help:
	@echo "make install                 create $(VENV) and install requirements.txt"
	@echo "make reproduce [PRESET=...]  baseline + every ablation of the preset (SEEDS seeds; default the preset's), then the report"
	@echo "               [WORKERS=N]   ... with N workers, one per visible GPU (docs/distributed.md)"
	@echo "make ablation NAME=no_lrn    one ablation (baseline + variant, SEEDS seeds), then the report"
	@echo "make train                   one baseline run of PRESET"
	@echo "make report                  Markdown + PDF report from $(RUNS)/ (no training code, no GPU)"
	@echo "make publish                 finished runs of $(RUNS)/ into results/ (small files), then results/report.*"
	@echo "make bench                   training throughput (synthetic and, with DATA_DIR, real data)"
	@echo "make test                    the test suite on both Keras backends (tensorflow, jax)"
	@echo "make test-fast               the quick loop: the suite without the slow end-to-end tests, TensorFlow only"
	@echo "make export RUN_DIR=...      a finished run's model.keras (from its state if missing); SAVEDMODEL=dir: TF SavedModel (FORCE=1 replaces one)"
	@echo "make tensorboard             TensorBoard on $(RUNS)/ (logs of runs trained with BACKEND=tensorflow)"
	@echo "make lint                    ruff check . and ruff format --check ."
	@echo "make format                  ruff format . (and ruff check --fix .)"
	@echo "Variables: PRESET=$(PRESET) SEEDS=$(or $(SEEDS),<preset's>) NAME DATA_DIR RUNS=$(RUNS) BACKEND=$(BACKEND) WORKERS=$(WORKERS) SET='key=value ...'"

install:
	python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install --upgrade pip
	$(VENV)/bin/python -m pip install -r requirements.txt

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format:
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# The end-to-end subprocess tests (marked slow) and the tests of backend-independent
# code (marked one_backend) run once, under TensorFlow.
test: test-tf test-jax

test-tf:
	KERAS_BACKEND=tensorflow $(PY) -m pytest -q -n 2

test-jax:
	KERAS_BACKEND=jax $(PY) -m pytest -q -n 2 -m "not slow and not one_backend"

test-fast:
	KERAS_BACKEND=tensorflow $(PY) -m pytest -q -n 2 -m "not slow"

train:
	$(RUN) -m reproduce train --preset $(PRESET) $(SETARG)

reproduce:
	$(RUN) -m ablations reproduce --preset $(PRESET) $(SEEDARG) --runs $(RUNS) $(if $(filter-out 1,$(WORKERS)),--workers $(WORKERS)) $(SETARG)
	$(PY) -m reports --runs $(RUNS)

ablation:
	@test -n "$(NAME)" || { echo "usage: make ablation NAME=<name> [PRESET=...] [SEEDS=...]"; $(PY) -m ablations list --preset $(PRESET); exit 2; }
	$(RUN) -m ablations run $(NAME) --preset $(PRESET) $(SEEDARG) --runs $(RUNS) $(SETARG)
	$(PY) -m reports --runs $(RUNS)

report:
	$(PY) -m reports --runs $(RUNS)

# Finished runs of RUNS (small files only) into results/, then results/report.* and
# the README's results block.
publish:
	$(PY) -m reproduce publish --runs $(RUNS) --to results
	$(PY) -m reports --runs results --out results --readme README.md

bench:
	$(RUN) -m reproduce bench $(if $(DATA_DIR),--data $(call quote,$(DATA_ABS)),)

# A finished run's model.keras (written from its training state if it has none) and,
# with SAVEDMODEL=DIR, a TensorFlow SavedModel. RUN_DIR, not RUN: RUN is the command.
export:
	@test -n "$(RUN_DIR)" || { echo "usage: make export RUN_DIR=runs/<preset>/<label>-<fingerprint>/seed<k> [SAVEDMODEL=dir [FORCE=1]]"; exit 2; }
	$(RUN) -m reproduce export $(call quote,$(RUN_DIR)) $(if $(SAVEDMODEL),--savedmodel $(call quote,$(SAVEDMODEL)),) $(if $(FORCE),--force,)

# The per-epoch TensorBoard logs of the runs under RUNS. Runs trained on the JAX
# backend write none (metrics.csv holds the same numbers; see README.md).
tensorboard:
	$(if $(wildcard $(VENV)/bin/tensorboard),$(VENV)/bin/tensorboard,tensorboard) --logdir $(call quote,$(RUNS))
