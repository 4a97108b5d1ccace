#!/usr/bin/env bash
# Check the import contracts of pyproject.toml ([tool.importlinter]) with import-linter.
# passes/ is installed as nengo_onnx.passes, which an editable install does not put inside
# nengo_onnx/; the contracts are therefore checked on a regular install in a temporary folder.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
copy="$(mktemp -d)"
trap 'rm -rf "$copy"' EXIT
pip install --quiet --no-deps --no-build-isolation --target "$copy" "$root" >/dev/null 2>&1 \
    || pip install --quiet --no-deps --target "$copy" "$root"
cd "$copy"
PYTHONPATH="$copy" lint-imports "$root/pyproject.toml"
