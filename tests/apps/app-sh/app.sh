#!/bin/bash
# Serve a page that names PID 1 (tini when ENABLE_INIT_WRAPPER is set).
set -eu
dir=$(mktemp -d)
printf 'app-sh: started by app.sh, pid1=%s\n' "$(cat /proc/1/comm)" > "$dir/index.html"
cd "$dir"
exec python -m http.server "${PORT:-8080}" --bind 0.0.0.0
