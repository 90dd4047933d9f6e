#!/usr/bin/env bash
# Installs warmctl into ./.venv and builds the example models' weights.
#   scripts/install.sh          runtime only
#   scripts/install.sh --dev    plus test, lint and benchmark tools
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
extras="[embedded]"
[[ "${1:-}" == "--dev" ]] && extras="[embedded,dev,bench]"

if [[ ! -x .venv/bin/python ]]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".${extras}"

# Example weights are generated with a fixed seed, never downloaded or committed.
.venv/bin/python model_repository/build_models.py --quiet
