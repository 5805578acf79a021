#!/usr/bin/env bash
# Installs the Debian packages that carry aigc's embedded data sets (espeak-ng synthesises the speech
# ones offline; the CJK font labels plots and grids holding Chinese; PostgreSQL and Chromium for the
# service tests), when we are root; otherwise says what to install.
# Nothing is downloaded at run time.
set -u
packages=(fortunes fortunes-zh sword-text-web sword-text-kjv sword-text-sparv dataset-fashion-mnist
          fonts-noto-color-emoji fonts-wqy-zenhei espeak-ng)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Chromium: the web studio's browser test drives Debian's chromium through Playwright (no browser download)
command -v chromium >/dev/null || missing+=(chromium)
# PostgreSQL's server binaries: the service tests run a throwaway cluster (tests/serve/conftest.py)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "installing embedded data sets: ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "note: the embedded data sets need these Debian packages: ${missing[*]}" >&2
  echo "      install them with: sudo apt-get install ${missing[*]}" >&2
fi
