#!/usr/bin/env bash
# Run shoal's whole test suite on this machine, as root: install what is missing, start the
# container engines, build the local test images, check lint and types, then run pytest.
# Nothing is skipped: a missing engine or tool fails the run.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"

scripts/install-deps.sh
scripts/start-engines.sh
scripts/build-test-images.sh
scripts/check.sh
.venv/bin/pytest -q -p no:cacheprovider --durations=20 "$@"
