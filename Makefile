# rsrefseg-mm: the commands a newcomer runs.
#   make demo   train + test the tiny RSRefSeg on synthetic referring scenes (CPU)
#   make test   run the whole test suite
# Both create .venv first when needed (`make install`, idempotent).
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.rsrefseg-installed

.PHONY: install test demo clean

install:
	bash scripts/install_env.sh

$(STAMP): scripts/install_env.sh setup.py $(wildcard requirements/*.txt)
	bash scripts/install_env.sh

test: $(STAMP)
	$(PY) -m pytest tests

demo: $(STAMP)
	bash scripts/demo.sh

clean:
	rm -rf work_dirs build *.egg-info .pytest_cache
