#!/usr/bin/env bash
# Installs the Debian packages FreshRec needs when they are missing (root on the dev/CI box).
set -euo pipefail
need=()
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v chromium >/dev/null || need+=(chromium)
# The edge client's onnxruntime-web comes from npm (make install runs npm ci in edge/).
command -v npm >/dev/null || need+=(nodejs npm)
command -v promtool >/dev/null || need+=(prometheus)
command -v wrk >/dev/null || need+=(wrk)
# The online store of `make up` and the real-time benchmarks (redis-tools comes with it).
command -v redis-server >/dev/null || need+=(redis-server)
# The local stack scripts (infra/local/*.sh) probe ports, HTTP endpoints and process sessions.
command -v curl >/dev/null || need+=(curl)
command -v ss >/dev/null || need+=(iproute2)
command -v pgrep >/dev/null || need+=(procps)
command -v setsid >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
