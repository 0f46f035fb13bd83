# Two commands: `make run` (the demo daemon) and `make test` (the whole suite).
# Each installs what it needs: Debian packages (deps/apt/*.txt) and a .venv for Python.
PYTHON ?= /usr/bin/python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEMO   := etc/bootserverd.demo.yaml

.PHONY: run test deps-run deps-test check-config demo-image bench deb clean e2e demo-boot reliability ui-screenshot

deps-run:
	@tools/install-deps deps/apt/base.txt

deps-test:
	@tools/install-deps deps/apt/*.txt

$(VENV)/.runtime: requirements.txt
	@[ -x $(PY) ] || $(PYTHON) -m venv --system-site-packages $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	@touch $@

$(VENV)/.test: $(VENV)/.runtime requirements-test.txt
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements-test.txt
	@touch $@

demo-image: deps-run $(VENV)/.runtime
	@$(PY) tools/make_demo.py

run: demo-image
	@echo "bootserverd demo on loopback; try, in another terminal:"
	@echo "  curl -s tftp://127.0.0.1:6969/pxelinux.cfg/01-52-54-00-12-34-56"
	@echo "  curl -s tftp://127.0.0.1:6969/hello.txt"
	@echo "  nbdinfo --list nbd://127.0.0.1:10809"
	@echo "  curl -s http://127.0.0.1:8080/status"
	@echo "  curl -s http://127.0.0.1:8080/ipxe/52-54-00-12-34-56.ipxe"
	@echo "Ctrl-C stops it."
	@exec $(PY) -m bootserverd run --config $(DEMO)

check-config: demo-image
	@$(PY) -m bootserverd check-config --config $(DEMO)

test: deps-test $(VENV)/.test
	@$(PY) -m pytest

# Every end-to-end boot, the slow ones too (make test runs the fast ones).
e2e: deps-test $(VENV)/.test
	@BOOTSERVERD_E2E_SLOW=1 $(PY) -m pytest tests/e2e

# A PC (qemu) boots through bootserverd alone: iPXE ROM, kernel over HTTP, NBD root.
demo-boot: deps-test $(VENV)/.test
	@$(PY) tests/e2e/demo_boot.py

# docs/status-page.png: the status page after a real boot in the e2e lab (headless chromium).
ui-screenshot: deps-test $(VENV)/.test
	@$(PY) tests/e2e/status_screenshot.py

bench: deps-test $(VENV)/.test
	@for b in tests/bench/*_bench.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# Hardening: 10^6 fuzz inputs per target, full-size floods and faults → docs/reliability.md.
reliability: deps-test $(VENV)/.test
	@$(PY) tests/reliability/run.py

deb:
	@tools/install-deps deps/apt/deb.txt
	@tools/build-deb

clean:
	rm -rf .demo .pytest_cache build dist *.egg-info
