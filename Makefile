# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# Trained weights and other expensive artefacts are cached here during tests (inside the run).
export NEURFLOW_CACHE ?= $(CURDIR)/.cache/neurflow
PYTEST_ARGS ?=
# Neo4j's Cypher front end (parser and semantic analysis, an npm package) lints every statement in
# `make test` (tests/test_zz_cypher_lint.py); installed here when node and npm are present.
CYPHER_LINT_VERSION := 2.0.0-next.38
CYPHER_LINT_DIR := .cypher-lint
CYPHER_LINT_STAMP := $(CYPHER_LINT_DIR)/.installed-$(CYPHER_LINT_VERSION)

.PHONY: test demo venv sysdeps cypher-lint store-data app bench clean help

help:
	@echo "make demo   - install, build the demo store (embedded ArcadeDB), start the app"
	@echo "make test   - install and run the test suite (with Neo4j's Cypher front end when node is present)"
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

# @neo4j-cypher/language-support at the pinned version, once (a stamp file); without node and npm
# the lint test is skipped and says why.
cypher-lint:
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
	  echo "note: node and npm not found: the Cypher lint test (Neo4j's front end) will be skipped"; \
	elif [ ! -f $(CYPHER_LINT_STAMP) ]; then \
	  echo "installing @neo4j-cypher/language-support@$(CYPHER_LINT_VERSION) into $(CYPHER_LINT_DIR)/"; \
	  rm -rf $(CYPHER_LINT_DIR) && mkdir -p $(CYPHER_LINT_DIR) && \
	  npm install --prefix $(CYPHER_LINT_DIR) --no-audit --no-fund --no-save --loglevel=error \
	    @neo4j-cypher/language-support@$(CYPHER_LINT_VERSION) && touch $(CYPHER_LINT_STAMP) || \
	  echo "note: npm could not install @neo4j-cypher/language-support: the Cypher lint test will be skipped"; \
	fi

test: sysdeps venv cypher-lint
	$(PY) -m pytest $(PYTEST_ARGS)

demo: sysdeps venv
	$(VENV)/bin/neurflow demo

bench: venv
	$(PY) bench/ingest_speed.py --model fashion-cnn --tau 8 --k 30 --ig-steps 24 --max-images 30
	$(PY) bench/ingest_speed.py --model fashion-resnet --tau 3 --k 20 --ig-steps 16 --max-images 60 --granularities 1,0.5 --min-crop-std 0.2
	$(PY) bench/ingest_speed.py --model resnet50 --random-init --photos 2 --layers layer4.2,layer4.1,layer4.0 --tau 4 --k 8
	$(PY) bench/store_scale.py --classes 100

clean:
	rm -rf .cache .pytest_cache test-artifacts
