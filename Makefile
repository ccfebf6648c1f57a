# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv, install the pinned Python packages and the Debian packages the
# project uses, and are fast (seconds) when nothing changed.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PY_STAMP := $(VENV)/.installed
DEB_STAMP := $(VENV)/.debs
# Debian packages used by the embedded corpus and the tests (speech synthesis, sound tools), and
# the C compiler for MUSE's fused CPU kernels (torch_bridge/native).
DEB_PACKAGES := gcc g++ libc6-dev flite espeak-ng sox asterisk-core-sounds-en asterisk-core-sounds-en-g722 asterisk-core-sounds-es asterisk-core-sounds-es-g722 asterisk-core-sounds-fr asterisk-core-sounds-fr-g722 asterisk-core-sounds-it asterisk-core-sounds-it-g722 asterisk-core-sounds-ru asterisk-core-sounds-ru-g722 ufoai-sound openttd-opensfx chromium

# The demo uses the bundled MUSE and GTCRN checkpoints when ../shared has them (offline here).
SHARED_G_BEST := $(abspath ../shared/muse/g_best)
export JAXPROBE_MUSE_CHECKPOINT ?= $(if $(wildcard $(SHARED_G_BEST)),$(SHARED_G_BEST),)
SHARED_GTCRN := $(abspath ../shared/gtcrn/model_trained_on_vctk.tar)
export JAXPROBE_GTCRN_CHECKPOINT ?= $(if $(wildcard $(SHARED_GTCRN)),$(SHARED_GTCRN),)

.PHONY: setup demo hear-demo test bench clean-venv

setup: $(PY_STAMP) $(DEB_STAMP)

$(PY_STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c requirements.lock -e ".[dev,bench]"
	@touch $@

$(DEB_STAMP): Makefile scripts/install-debs.sh
	@test -x $(PY) || python3 -m venv $(VENV)
	bash scripts/install-debs.sh $(DEB_PACKAGES)
	@touch $@

demo: setup
	$(VENV)/bin/jaxprobe demo

# The second paper's study (recognisers, probes, listening) on the embedded corpus: 15-50 min here
# (recogniser training is capped at 8 min each; listening 5-7 min per recogniser at load 1-3); resumable.
hear-demo: setup
	$(VENV)/bin/jaxprobe hear --config demo

# The suite runs in several pytest processes (a group of files each): one process compiling every
# program of ~1,000 tests aborted inside an XLA compile late in a run, though each file passes alone.
TEST_GROUPS := "tests/jaxprobe/test_[a-c]*.py" "tests/jaxprobe/test_[d-h]*.py" "tests/jaxprobe/test_[i-r]*.py" \
	"tests/jaxprobe/test_s*.py" "tests/jaxprobe/test_[t-z]*.py" "tests --ignore=tests/jaxprobe"
test: setup
	@status=0; for g in $(TEST_GROUPS); do echo "== pytest $$g"; $(PY) -m pytest -q $$g || status=1; done; exit $$status

bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
