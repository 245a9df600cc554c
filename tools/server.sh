#!/usr/bin/env bash
# The README's start command: installs the build's system packages when
# missing (etcd-client's build runs protoc; the node agent wires pod
# networks with iproute2 and host ports with nftables), builds r8s and runs `r8s server` with the
# arguments given, e.g. `--data-dir /tmp/r8s`.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
# Container seccomp filters are built with libseccomp.
[ -f /usr/include/seccomp.h ] || need+=(libseccomp-dev)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# hostPort mappings are nftables rules.
command -v nft >/dev/null 2>&1 || need+=(nftables)
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  apt-get update -qq
  apt-get install -y -qq "${need[@]}"
fi
exec cargo run --release -- server "$@"
