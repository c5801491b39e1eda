#!/usr/bin/env bash
# One-time set-up on a fresh machine: a virtual environment in .venv with
# medmodal and everything it needs. Safe to re-run; does nothing when up to date.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.medmodal-installed
INPUTS="pyproject.toml constraints/cpu.txt requirements/clinical-nlp.txt scripts/setup.sh"

up_to_date() {
  [ -f "$STAMP" ] || return 1
  for f in $INPUTS; do [ "$f" -nt "$STAMP" ] && return 1; done
  return 0
}
# ---- headless browser for the review-page test (tests/serving/test_review.py) -------------
# Chromium + a matching chromedriver from the distribution (apt): Playwright's own browser
# download needs its CDN, which a build machine here cannot reach. Idempotent: skipped once
# chromedriver is on PATH, and skippable with MEDMODAL_SKIP_BROWSER=1 (the test then skips).
install_browser() {
  if [ "${MEDMODAL_SKIP_BROWSER:-0}" = "1" ] || command -v chromedriver >/dev/null 2>&1; then return 0; fi
  local SUDO=""
  if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
      echo "[setup] note: no root; install chromium + chromedriver yourself for the browser test"; return 0; fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "[setup] note: no apt-get; install chromium + chromedriver yourself for the browser test"; return 0
  fi
  echo "[setup] installing chromium + chromium-driver (apt) for the review-page browser test"
  { $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium chromium-driver; } \
    >/dev/null 2>&1 || echo "[setup] warning: apt-get install chromium chromium-driver failed; the browser test will skip"
}
install_browser
# ------------------------------------------------------------------------------------------

if up_to_date; then exit 0; fi

echo "[setup] creating $VENV and installing medmodal (a few minutes the first time)"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
# The CPU wheel of torch first (constraints/cpu.txt), so nothing pulls a CUDA build.
$PIP install -c constraints/cpu.txt "torch==2.13.0+cpu" 2>&1 | grep -v "is ignored: it is neither" || true
$PIP install -c constraints/cpu.txt -e ".[clinical-nlp,dev]" 2>&1 | grep -v "is ignored: it is neither" || true
$PIP install --no-deps -r requirements/clinical-nlp.txt 2>&1 | grep -v "is ignored: it is neither" || true
# Real report data that ships inside a wheel (no download at run time): the
# Open-i / Indiana University chest X-ray report XMLs in torchxrayvision's wheel.
# Fetched --no-deps (its dependency torchvision must not be installed here).
OPENI=.cache/openi/NLMCXR_reports.tgz
if [ ! -f "$OPENI" ]; then
  mkdir -p .cache/wheels .cache/openi
  if $PIP download --no-deps -d .cache/wheels "torchxrayvision==1.5.7" 2>&1 | grep -v "is ignored: it is neither"; then :; fi
  "$VENV/bin/python" - <<'PY' || echo "[setup] warning: could not extract the Open-i reports; their tests will be skipped"
import glob, zipfile
wheel = sorted(glob.glob(".cache/wheels/torchxrayvision-*.whl"))[-1]
with zipfile.ZipFile(wheel) as z, open(".cache/openi/NLMCXR_reports.tgz", "wb") as out:
    out.write(z.read("torchxrayvision/data/NLMCXR_reports.tgz"))
PY
fi
"$VENV/bin/python" -c "import medmodal, torch, medspacy; print('[setup] medmodal', medmodal.__version__, '| torch', torch.__version__)"
touch "$STAMP"
