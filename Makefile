# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# Trained weights and other expensive artefacts are cached here during tests (inside the run).
export NEURFLOW_CACHE ?= $(CURDIR)/.cache/neurflow
PYTEST_ARGS ?=

.PHONY: test demo venv sysdeps store-data app bench clean help

help:
	@echo "make demo   - install, build the demo store (embedded ArcadeDB), start the app"
	@echo "make test   - install and run the test suite"
	@echo "make bench  - run the benchmarks in bench/"

# Debian packages: the Fashion-MNIST files and a headless browser for the app's end-to-end test.
sysdeps:
	@if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || ! command -v chromium >/dev/null; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages: dataset-fashion-mnist chromium"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist chromium >/dev/null; \
	  else \
	    echo "note: install Debian packages dataset-fashion-mnist and chromium (or let torchvision download Fashion-MNIST)"; \
	  fi; \
	fi

$(STAMP): pyproject.toml
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip >/dev/null
	$(PIP) install -q -e '.[app,efficientnet,ray,test]'
	@touch $(STAMP)

venv: $(STAMP)

test: sysdeps venv
	$(PY) -m pytest $(PYTEST_ARGS)

demo: sysdeps venv
	$(VENV)/bin/neurflow demo

bench: venv
	$(PY) bench/ingest_speed.py --tau 8 --k 30 --ig-steps 24 --max-images 30
	$(PY) bench/ingest_speed.py --model resnet50 --random-init --photos 2 --layers layer4.2,layer4.1,layer4.0 --tau 4 --k 8
	$(PY) bench/store_scale.py --classes 100

clean:
	rm -rf .cache .pytest_cache test-artifacts
