# The course's commands. `make help` lists them. Every target installs what it needs first.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
D2L    := d2l==1.0.3

.DEFAULT_GOAL := help
.PHONY: help setup data test lint unit notebooks run bench lab clean student doctor browser site handout grade formgrader

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	# the book's package is the tests' oracle; --no-deps: it pins numpy==1.23.5 and friends
	$(PY) -m pip install --quiet --no-deps $(D2L)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# JupyterLab's settings for the course (no news pop-up), installed into the environment
LAB_OVERRIDES := $(VENV)/share/jupyter/lab/settings/overrides.json
$(LAB_OVERRIDES): jupyter/overrides.json | $(STAMP)
	install -D -m 644 $< $@
	# students see no nbgrader menus or panels (instructors use nbgrader's commands, see README)
	@$(VENV)/bin/jupyter labextension disable --level=sys_prefix @jupyter/nbgrader >/dev/null 2>&1
	@for e in formgrader validate_assignment assignment_list course_list; do \
	  $(VENV)/bin/jupyter server extension disable --sys-prefix nbgrader.server_extensions.$$e >/dev/null 2>&1; done

setup: $(STAMP) $(LAB_OVERRIDES)  ## create .venv with everything (seconds when nothing changed)

data: setup  ## provide and check Fashion-MNIST under data/
	@$(PY) tools/get_data.py

lint: setup  ## ruff on the code and the notebooks
	$(VENV)/bin/ruff check .

# smoke: seconds per notebook; no progress bars in logs; results away from the committed ones
TEST_ENV := D2L_SETTING=smoke D2L_PROGRESS=0 MPLBACKEND=Agg D2L_RESULTS_DIR=$(CURDIR)/build/test-results

# two workers, one file each at a time (loadfile): the papermill runs (tests/test_notebooks.py) on
# one, nbval's runs of the same notebooks and the unit tests on the other
test: setup data lint  ## ruff, unit tests, notebooks in the smoke setting (papermill + nbval)
	$(TEST_ENV) $(PY) -m pytest tests notebooks --nbval-lax -p no:cacheprovider -n 2 --dist loadfile

unit: setup data  ## the unit tests only
	$(TEST_ENV) $(PY) -m pytest tests -m "not notebooks" -p no:cacheprovider

run: setup data  ## execute every notebook in this hardware's default setting; print the results
	$(PY) tools/run_notebooks.py

bench: setup data  ## time the d2l pipeline, ours and the compute ceiling; write results/bench-*.json
	$(PY) tools/bench.py

student: setup  ## write the exercises' student copies (student/notebooks/) with nbgrader
	$(VENV)/bin/nbgrader generate_assignment notebooks --no-db --force --log-level=WARN

handout: student  ## the students' hand-out: build/handout/alexnet-exercises/ and its .tar.gz (no solutions)
	$(PY) tools/handout.py

# instructors (README, "For instructors"): nbgrader calls alembic, so .venv/bin goes on the PATH; the
# notebooks are graded in the smoke setting (seconds per notebook, the tests do not depend on it)
GRADE_ENV := PATH=$(CURDIR)/$(VENV)/bin:$$PATH D2L_SETTING=smoke D2L_PROGRESS=0 MPLBACKEND=Agg \
	D2L_RESULTS_DIR=$(CURDIR)/build/grading
grade: setup data  ## autograde submitted/*/notebooks/, write feedback/ and feedback/grades.csv
	$(GRADE_ENV) $(VENV)/bin/nbgrader generate_assignment notebooks --force --log-level=WARN
	$(GRADE_ENV) $(VENV)/bin/nbgrader autograde notebooks --log-level=WARN
	$(GRADE_ENV) $(VENV)/bin/nbgrader generate_feedback notebooks --log-level=WARN
	$(GRADE_ENV) $(VENV)/bin/nbgrader export --to feedback/grades.csv --log-level=WARN

formgrader: setup  ## JupyterLab with nbgrader's formgrader, to grade the written answers by hand
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/jupyter lab $(ROOT_FLAG) $(LAB_ARGS) \
	  --ServerApp.jpserver_extensions='{"nbgrader.server_extensions.formgrader": True}'

# Jupyter refuses to run as root unless told (containers, CI machines)
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)

lab: setup data  ## start JupyterLab on the project's environment
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=notebooks $(ROOT_FLAG) $(LAB_ARGS)

doctor: setup  ## check this machine for the course: Python, packages, device, memory, data, kernel
	@$(PY) -m course_tools.doctor

# Debian's chromium (a browser download fails on these machines); apt-get needs root
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	 else echo "the browser test needs Debian's chromium: run 'sudo apt-get install chromium'"; exit 1; fi

browser: setup data $(CHROMIUM)  ## run the chapter's notebooks in JupyterLab, and open the site, in headless Chromium
	D2L_BROWSER=1 timeout 900 $(PY) -m pytest tests/test_browser.py tests/test_site.py -p no:cacheprovider -v

# Sphinx + MyST-NB (site/conf.py): the README as the front page, then every notebook in reading order,
# with the outputs it was committed with (nothing is executed); no network needed to read it
site: setup  ## build the course's website from the committed notebooks: open build/site/index.html
	$(PY) -m sphinx -b html -q -c site . build/site
	@echo "the site is in build/site: open build/site/index.html in a browser"

clean:  ## remove the environment, executed copies and caches (keeps data/)
	rm -rf $(VENV) build .pytest_cache .ruff_cache
