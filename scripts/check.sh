#!/usr/bin/env bash
# Fast static checks (the ones scripts/test.sh runs before pytest): run before every commit.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m shoal.proto.check >/dev/null
.venv/bin/python scripts/check-pipefail.py
.venv/bin/ruff check core plugins tests bench scripts
.venv/bin/ruff format --check core plugins tests bench scripts
.venv/bin/mypy core/src plugins/*/src scripts/check-pipefail.py
