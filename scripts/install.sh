#!/usr/bin/env bash
# Installs warmctl into ./.venv and builds the example models' weights.
#   scripts/install.sh          runtime only
#   scripts/install.sh --dev    plus test, lint and benchmark tools
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
extras="[embedded]"
[[ "${1:-}" == "--dev" ]] && extras="[embedded,dev,bench]"

# Progress: one line per step, with the seconds since the start (pip's own lines are many
# and its warnings about the machine's other installs are noise here; its errors still show).
started=$SECONDS
step() { echo "install.sh: [$((SECONDS - started)) s] $*"; }

if [[ ! -x .venv/bin/python ]]; then
    step "creating the virtual environment .venv ($("$PYTHON" --version 2>&1))"
    "$PYTHON" -m venv .venv
fi
step "upgrading pip"
.venv/bin/python -m pip install -qq --disable-pip-version-check --upgrade pip
step "installing warmctl${extras} and its dependencies (a few minutes the first time)"
.venv/bin/python -m pip install -qq --disable-pip-version-check -e ".${extras}"
step "installed: $(.venv/bin/python -m pip list --disable-pip-version-check 2>/dev/null \
    | tail -n +3 | wc -l) packages"

# Tests only: promtool checks /metrics, headless chromium loads the status page (Debian
# packages; Playwright drives this chromium and downloads no browser of its own).
if [[ "${1:-}" == "--dev" ]] && ! { command -v promtool && command -v chromium; } >/dev/null; then
    if [[ $(id -u) -eq 0 ]]; then sudo=(); elif command -v sudo >/dev/null; then sudo=(sudo)
    else sudo=(false); fi
    if command -v apt-get >/dev/null && "${sudo[@]}" true 2>/dev/null; then
        step "installing promtool and chromium (Debian's prometheus, chromium) for the tests"
        { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
          "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
              --no-install-recommends prometheus chromium >/dev/null; } ||
            echo "install.sh: apt-get could not install prometheus and chromium" >&2
    else
        echo "install.sh: install promtool (Debian: prometheus) and chromium yourself;" \
             "their tests are skipped without them (and fail under CI=true)" >&2
    fi
fi

# Tests only: the store's tests and tests/integration/test_postgres_store.py run on a real
# PostgreSQL as well as SQLite. The tests start a server of their own from these binaries
# (tests/support/postgres.py), so no cluster is created here and no service started: a
# createcluster.d snippet tells the package not to create its "main" cluster.
if [[ "${1:-}" == "--dev" ]] && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    if [[ $(id -u) -eq 0 ]]; then sudo=(); elif command -v sudo >/dev/null; then sudo=(sudo)
    else sudo=(false); fi
    if command -v apt-get >/dev/null && "${sudo[@]}" true 2>/dev/null; then
        step "installing PostgreSQL (Debian's postgresql) for the store's tests"
        "${sudo[@]}" mkdir -p /etc/postgresql-common/createcluster.d
        echo "create_main_cluster = false" |
            "${sudo[@]}" tee /etc/postgresql-common/createcluster.d/warmctl.conf >/dev/null
        { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
          "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
              --no-install-recommends postgresql >/dev/null; } ||
            echo "install.sh: apt-get could not install postgresql" >&2
    else
        echo "install.sh: install PostgreSQL (Debian: postgresql) or set" \
             "WARMCTL_TEST_POSTGRES_URL; its tests are skipped without (and fail under CI=true)" >&2
    fi
fi

# AOTInductor packages (built below) and torch.compile on CPU compile C++: a compiler is needed
# here and wherever Triton serves torch_compile models. Without one the AOTInductor example is
# skipped (saying so) and its tests fail.
if ! command -v g++ >/dev/null && ! command -v c++ >/dev/null; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        step "installing a C++ compiler (Debian's g++) for AOTInductor and torch.compile"
        { DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends g++ >/dev/null; } \
            || echo "install.sh: could not install g++" >&2
    else
        echo "install.sh: no C++ compiler (g++): install one for AOTInductor and" \
             "torch.compile models" >&2
    fi
fi

# Example weights are generated with a fixed seed, never downloaded or committed.
step "building the example models' weights (model_repository/build_models.py)"
.venv/bin/python model_repository/build_models.py --quiet
step "done: start with .venv/bin/warmctl serve"
