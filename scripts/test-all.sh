#!/usr/bin/env bash
# Installs everything the test suite drives (Debian exporters, Python test deps) and runs
# the whole suite. Safe to run again: installs are skipped when already present.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v softflowd >/dev/null || need_apt+=(softflowd)
command -v tshark >/dev/null || need_apt+=(tshark)
command -v pmacctd >/dev/null || need_apt+=(pmacct)
if ((${#need_apt[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]'

# Real exporters and engines are required here: a missing one is a failure, not a skip.
export FLOW_INGEST_REQUIRE_REAL_EXPORTERS=1
python3 -m pytest -q -p no:cacheprovider "$@"
