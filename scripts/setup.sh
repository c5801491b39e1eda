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
# pip, quiet, without its one harmless warning; a failure shows in the import check at the end
pipq() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2>&1 | grep -v "is ignored: it is neither" || true; }

# ---- the packages: uv when it can be had, pip otherwise -----------------------------------
# uv installs the same versions about 3x faster (in parallel, and without byte-compiling all of
# site-packages: the import check at the end compiles what the demo loads). uv does not read
# pip's configuration, so pip's own indexes, find-links (the CPU torch wheel on disk) and
# constraints are handed to it; any failure falls back to pip. The CPU wheel of torch is pinned
# by constraints/cpu.txt either way, so nothing pulls a CUDA build. MEDMODAL_NO_UV=1: pip only.
install_with_uv() {
  [ "${MEDMODAL_NO_UV:-0}" = "1" ] && return 1
  local UV
  UV=$(command -v uv) || { pipq install --no-compile uv; UV=$VENV/bin/uv; }
  [ -x "$UV" ] || return 1
  # pip's effective settings (environment > [install] > [global]) as uv arguments, one a line
  local SETTINGS
  SETTINGS=$("$VENV/bin/python" - <<'PY'
import ast, re, subprocess, sys
out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True).stdout
rank = {"global": 0, "install": 1, ":env:": 2}
best = {}
for line in out.splitlines():
    m = re.match(r"(:env:|install|global)\.([\w-]+)=(.*)$", line)
    if m and rank[m[1]] >= best.get(m[2], (-1, ""))[0]:
        best[m[2]] = (rank[m[1]], ast.literal_eval(m[3]))
flags = {"index-url": "--index-url", "extra-index-url": "--extra-index-url", "find-links": "--find-links", "constraint": "-c"}
for key, flag in flags.items():
    for value in best.get(key, (0, ""))[1].split():
        print(flag, value, sep="\n")
if best.get("no-index", (0, ""))[1].lower() in ("1", "true", "yes", "on"):
    print("--no-index")
PY
  ) || return 1
  local -a ARGS=()
  [ -z "$SETTINGS" ] || mapfile -t ARGS <<<"$SETTINGS"
  # pip's rule for several indexes: the best version across all of them
  ARGS+=(--python "$VENV/bin/python" --index-strategy unsafe-best-match -q)
  "$UV" pip install "${ARGS[@]}" -c constraints/cpu.txt "torch==2.13.0+cpu" -e ".[clinical-nlp,dev]" &&
    "$UV" pip install "${ARGS[@]}" --no-deps -r requirements/clinical-nlp.txt
}
install_with_pip() {
  pipq install -c constraints/cpu.txt "torch==2.13.0+cpu"
  pipq install -c constraints/cpu.txt -e ".[clinical-nlp,dev]"
  pipq install --no-deps -r requirements/clinical-nlp.txt
}
install_with_uv || { echo "[setup] note: uv unavailable or failed; installing with pip"; install_with_pip; }
# ------------------------------------------------------------------------------------------
# Real report data that ships inside a wheel (no download at run time): the
# Open-i / Indiana University chest X-ray report XMLs in torchxrayvision's wheel.
# Fetched --no-deps (its dependency torchvision must not be installed here).
OPENI=.cache/openi/NLMCXR_reports.tgz
if [ ! -f "$OPENI" ]; then
  mkdir -p .cache/wheels .cache/openi
  pipq download --no-deps -d .cache/wheels "torchxrayvision==1.5.7"
  "$VENV/bin/python" - <<'PY' || echo "[setup] warning: could not extract the Open-i reports; their tests will be skipped"
import glob, zipfile
wheel = sorted(glob.glob(".cache/wheels/torchxrayvision-*.whl"))[-1]
with zipfile.ZipFile(wheel) as z, open(".cache/openi/NLMCXR_reports.tgz", "wb") as out:
    out.write(z.read("torchxrayvision/data/NLMCXR_reports.tgz"))
PY
fi
# The import check, with .pyc writing allowed: it byte-compiles the modules the demo loads (uv
# leaves that out; compiling all of site-packages took 30-80 s more here), which a machine with
# PYTHONDONTWRITEBYTECODE=1 would otherwise recompile at every start (~20 s for torch & co.).
PYTHONDONTWRITEBYTECODE= "$VENV/bin/python" - <<'PY'
import importlib
import medmodal, medspacy, torch
# the modules of `medmodal demo` (medmodal/cli/demo.py); one that fails only loses its warm-up
for name in ("medmodal.cli.main", "medmodal.cli.demo", "medmodal.data.synthetic",
             "medmodal.evaluation.evaluate", "medmodal.training.baselines", "medmodal.training.trainer"):
    try:
        importlib.import_module(name)
    except Exception as err:
        print(f"[setup] note: importing {name} failed: {err!r}")
print("[setup] medmodal", medmodal.__version__, "| torch", torch.__version__)
PY
touch "$STAMP"
