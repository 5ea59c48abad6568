# Thin aliases for dev.py, which does the bootstrapping (works without make too).
PY ?= python3
.PHONY: serve test sync lint typecheck protos bench cassettes
serve: ; $(PY) dev.py serve
test: ; $(PY) dev.py test
sync: ; $(PY) dev.py sync
lint: ; $(PY) dev.py lint
typecheck: ; $(PY) dev.py typecheck
protos: ; $(PY) dev.py protos
bench: ; $(PY) dev.py bench
