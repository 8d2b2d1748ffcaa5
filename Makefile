# rsrefseg-mm: the commands a newcomer runs.
#   make demo   train + test the tiny RSRefSeg on synthetic referring scenes (CPU)
#   make test   run the whole test suite
#   make lint   flake8 + isort --check + yapf --diff (settings in setup.cfg)
#   make test-web  drive the web demo in headless Chromium (needs Debian's
#                  chromium + chromium-driver); screenshot in work_dirs/test_web/
#   make test-qgis open the GeoTIFF demo's outputs in QGIS (needs Debian's
#                  python3-qgis + qgis-providers and the `make demo` checkpoint)
# All create .venv first when needed (`make install`, idempotent).
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.rsrefseg-installed

LINT_PATHS := rsrefseg_core rsrefseg_mm rsrefseg_deploy configs tools demo tests .dev_scripts setup.py

.PHONY: install test lint test-web test-qgis demo clean

install:
	bash scripts/install_env.sh

$(STAMP): scripts/install_env.sh setup.py $(wildcard requirements/*.txt)
	bash scripts/install_env.sh

test: $(STAMP)
	$(PY) -m pytest tests

lint: $(STAMP)
	$(PY) -m flake8 $(LINT_PATHS)
	$(PY) -m isort --check-only --diff $(LINT_PATHS)
	$(PY) -m yapf --diff --recursive $(LINT_PATHS)

test-web: $(STAMP)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ echo "make test-web needs Chromium: apt-get install -y chromium chromium-driver"; exit 1; }
	$(PY) -m pytest -m browser tests/test_e2e/test_web_browser.py -s

test-qgis: $(STAMP)
	@/usr/bin/python3 -c "import qgis.core" 2>/dev/null || \
		{ echo "make test-qgis needs PyQGIS: apt-get install -y python3-qgis qgis-providers"; exit 1; }
	$(PY) -m pytest -m qgis tests/test_e2e/test_qgis.py -s

demo: $(STAMP)
	bash scripts/demo.sh

clean:
	rm -rf work_dirs build *.egg-info .pytest_cache
