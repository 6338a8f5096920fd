#!/usr/bin/env bash
# Create (once per lock-file hash) the virtual environment outside the clone, then install this
# checkout into it in editable mode. Usage: scripts/ensure-env.sh ENV_DIR
set -euo pipefail
env_dir="$1"
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -f "$env_dir/.complete" ]; then
  echo "compress: building the environment in $env_dir (first run: 2 to 4 minutes, ~5 GB)" >&2
  rm -rf "$env_dir"
  mkdir -p "$(dirname "$env_dir")"
  python3 -m venv "$env_dir"
  if ! "$env_dir/bin/pip" install --progress-bar off -r "$root/requirements.lock" >"$env_dir/install.log" 2>&1; then
    tail -n 20 "$env_dir/install.log" >&2
    echo "compress: installing the environment failed; full log: $env_dir/install.log" >&2
    exit 1
  fi
  touch "$env_dir/.complete"
fi
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  # Headless Chromium renders the HTML report in its test (Debian package; skipped if unavailable).
  echo "compress: installing chromium for the report's browser test (once)" >&2
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >"$env_dir/apt.log" 2>&1; then
    echo "compress: chromium could not be installed (see $env_dir/apt.log); the browser test will be skipped" >&2
  fi
fi
"$env_dir/bin/pip" install --quiet --no-deps --no-build-isolation -e "$root" >/dev/null
