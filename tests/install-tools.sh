#!/usr/bin/env bash
# Installs the tools the test suite drives besides Python packages:
#   pdflatex and pdftotext (Debian: texlive-latex-base, poppler-utils) to compile the derivation,
#   node and npm's katex (pinned in tests/js/package.json) to render the Markdown math.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v pdflatex >/dev/null 2>&1 || missing+=(texlive-latex-base)
command -v pdftotext >/dev/null 2>&1 || missing+=(poppler-utils)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "install-tools: apt-get install ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ -f tests/js/package.json ]; then
  npm install --prefix tests/js --no-audit --no-fund --silent
fi
echo "install-tools: pdflatex, pdftotext, node and katex are ready"
