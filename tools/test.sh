#!/usr/bin/env bash
# The README's test command (and CI's): installs what the build and the
# tests need when missing, checks formatting and lints, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# A shared target dir outside the clone keeps rebuilds fast; a cold one
# still works. The shared path may be unusable on a reused machine (a
# dangling symlink, a file, no permission): then build inside the clone.
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  shared_target=/var/tmp/r8s-target
  if mkdir -p "$shared_target" 2>/dev/null && [ -d "$shared_target" ] && [ -w "$shared_target" ]; then
    export CARGO_TARGET_DIR="$shared_target"
  else
    echo "note: $shared_target is not a usable directory; building in ./target" >&2
    export CARGO_TARGET_DIR="$PWD/target"
  fi
fi
export CARGO_TERM_COLOR=never

need_pkgs=()
command -v kubectl >/dev/null 2>&1 || need_pkgs+=(kubectl)
# etcd-client builds its gRPC code with protoc, which needs the well-known
# .proto files; the store conformance suite runs a real etcd; the image
# tests build a busybox image from Debian's static busybox.
command -v protoc >/dev/null 2>&1 || need_pkgs+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || need_pkgs+=(libprotobuf-dev)
# Container seccomp filters are built with libseccomp.
[ -f /usr/include/seccomp.h ] || need_pkgs+=(libseccomp-dev)
command -v etcd >/dev/null 2>&1 || need_pkgs+=(etcd-server)
dpkg -s busybox-static >/dev/null 2>&1 || need_pkgs+=(busybox-static)
# The node agent wires pod networks with iproute2's `ip`.
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
# The disk fault tests make an ext4 loop device and check it afterwards.
command -v mkfs.ext4 >/dev/null 2>&1 || need_pkgs+=(e2fsprogs)
command -v losetup >/dev/null 2>&1 || need_pkgs+=(mount)
# hostPort mappings and the service proxy are nftables rules, made with `nft`.
command -v nft >/dev/null 2>&1 || need_pkgs+=(nftables)
# The service proxy clears stale UDP conntrack entries with `conntrack`.
command -v conntrack >/dev/null 2>&1 || need_pkgs+=(conntrack)
# The network tests run agents in network namespaces with nsenter, and a
# pod runs the host's curl and the official Python client (Debian's
# python3-kubernetes) against the API through the kubernetes Service.
command -v nsenter >/dev/null 2>&1 || need_pkgs+=(util-linux)
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
/usr/bin/python3 -c 'import kubernetes' >/dev/null 2>&1 || need_pkgs+=(python3-kubernetes)
# Image pulls are tested against Debian's docker-registry (htpasswd auth
# made with apache2-utils' htpasswd), the image pushed with skopeo.
command -v docker-registry >/dev/null 2>&1 || need_pkgs+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || need_pkgs+=(skopeo)
command -v htpasswd >/dev/null 2>&1 || need_pkgs+=(apache2-utils)
# The ingress test makes its certificate authority with openssl.
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
# The web console's browser tests drive headless Chromium with chromedriver.
command -v chromium >/dev/null 2>&1 || need_pkgs+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_pkgs+=(chromium-driver)
# CronJob time zones are read from the system tz database.
[ -d /usr/share/zoneinfo/America ] || need_pkgs+=(tzdata)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  echo "installing: ${need_pkgs[*]}"
  apt-get update -qq
  apt-get install -y -qq "${need_pkgs[@]}"
fi
command -v kubectl >/dev/null 2>&1 || { echo "kubectl is required for the end-to-end tests and could not be installed" >&2; exit 1; }

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
