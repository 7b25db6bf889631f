#!/usr/bin/env bash
# Set up (once) and run ramit_hf on a fresh machine.
#   scripts/run.sh tests            install everything, run the style check (ruff, mypy), then the tests
#   scripts/run.sh COMMAND [ARGS]   install the library and run COMMAND inside its environment (e.g. ramit restore ...)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${RAMIT_VENV:-$root/.venv}"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
# torch first and pinned: the CPU build of 2.13.0 is what the rest resolves against
"$venv/bin/python" -m pip install --quiet torch==2.13.0
extras="."
if [ "${1:-}" = "tests" ]; then
  extras=".[test,train,space,onnx,datasets,video]"
fi
"$venv/bin/python" -m pip install --quiet -e "$root/$extras" 2>&1 | grep -v "^WARNING: Location" || true
if [ "${1:-}" = "tests" ]; then
  # spandrel requires torchvision, for which pip would replace torch: spandrel without it, and its other dependency
  "$venv/bin/python" -m pip install --quiet einops && "$venv/bin/python" -m pip install --quiet --no-deps "spandrel==0.4.2"
fi
export PATH="$venv/bin:$PATH"

if [ "${1:-}" = "tests" ]; then
  shift
  cd "$root"
  # the style check first: lint, format and types (configured in pyproject.toml)
  ruff check --quiet .
  ruff format --check --quiet .
  mypy --no-error-summary
  # several test processes share the cores: idle OpenMP threads must sleep, not spin
  export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
  # two pytest-xdist workers, each running whole files (module fixtures built once): many tests wait on
  # subprocesses, model loading or I/O, so two share the two cores of CI far better than one does alone
  exec python -m pytest -q -n "${RAMIT_TEST_WORKERS:-2}" --dist loadfile "$@"
fi
exec "$@"
