# rsrefseg-mm: the commands a newcomer runs.
#   make demo   train + test the tiny RSRefSeg on synthetic referring scenes (CPU)
#   make test   run the whole test suite
#   make test-web  drive the web demo in headless Chromium (needs Debian's
#                  chromium + chromium-driver); screenshot in work_dirs/test_web/
# All create .venv first when needed (`make install`, idempotent).
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.rsrefseg-installed

.PHONY: install test test-web demo clean

install:
	bash scripts/install_env.sh

$(STAMP): scripts/install_env.sh setup.py $(wildcard requirements/*.txt)
	bash scripts/install_env.sh

test: $(STAMP)
	$(PY) -m pytest tests

test-web: $(STAMP)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ echo "make test-web needs Chromium: apt-get install -y chromium chromium-driver"; exit 1; }
	$(PY) -m pytest -m browser tests/test_e2e/test_web_browser.py -s

demo: $(STAMP)
	bash scripts/demo.sh

clean:
	rm -rf work_dirs build *.egg-info .pytest_cache
