#!/usr/bin/env bash
# Builds a minimal busybox OCI image (OCI image-layout tarball, plain tar) from
# Debian's busybox-static package, without docker. The output is deterministic:
# fixed mtimes, owners and entry order, gzip without timestamps.
#
# usage: tools/build-busybox-image.sh OUTPUT.tar [IMAGE-NAME]   (default busybox:latest)
# env:   BUSYBOX=/path/to/static/busybox to use another binary.
set -euo pipefail

out=${1:?usage: $0 OUTPUT.tar [IMAGE-NAME]}
name=${2:-busybox:latest}
busybox=${BUSYBOX:-/bin/busybox}

is_static() {
    # A static binary has no ELF interpreter (PT_INTERP).
    python3 - "$1" <<'PY'
import struct, sys
with open(sys.argv[1], "rb") as f:
    d = f.read(1 << 16)
if d[:4] != b"\x7fELF" or d[4] != 2:
    sys.exit(1)
phoff, = struct.unpack_from("<Q", d, 0x20)
phentsize, phnum = struct.unpack_from("<HH", d, 0x36)
for i in range(phnum):
    if struct.unpack_from("<I", d, phoff + i * phentsize)[0] == 3:
        sys.exit(1)
PY
}

if [[ -z ${BUSYBOX:-} ]] && { [[ ! -x $busybox ]] || ! is_static "$busybox"; }; then
    echo "build-busybox-image: installing busybox-static" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq busybox-static >&2; then
        apt-get update -qq >&2
        apt-get install -y -qq busybox-static >&2
    fi
fi
if [[ ! -x $busybox ]] || ! is_static "$busybox"; then
    echo "build-busybox-image: $busybox is not a static busybox binary" >&2
    exit 1
fi

python3 - "$out" "$name" "$busybox" <<'PY'
import gzip, hashlib, io, json, os, platform, subprocess, sys, tarfile

out, name, busybox = sys.argv[1:4]
MTIME = 946684800  # 2000-01-01, fixed for reproducibility
arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())

# Fully-qualified name, docker-style: busybox -> docker.io/library/busybox:latest.
def normalize(n):
    repo, tag = n, "latest"
    if ":" in n.rsplit("/", 1)[-1]:
        repo, tag = n.rsplit(":", 1)
    first = repo.split("/", 1)[0]
    if "/" not in repo or not ("." in first or ":" in first or first == "localhost"):
        if "/" not in repo:
            repo = "library/" + repo
        repo = "docker.io/" + repo
    return f"{repo}:{tag}"
full = normalize(name)

applets = subprocess.run([busybox, "--list"], check=True, capture_output=True, text=True).stdout.split()
for must in ["sh", "ls", "ps", "httpd", "cat", "echo", "sleep", "true", "false", "wget"]:
    if must not in applets:
        sys.exit(f"build-busybox-image: busybox lacks applet {must}")

def info(path, kind, mode, size=0, link=""):
    t = tarfile.TarInfo(path)
    t.type, t.mode, t.size, t.linkname = kind, mode, size, link
    t.mtime, t.uid, t.gid, t.uname, t.gname = MTIME, 0, 0, "root", "root"
    return t

files = {
    "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "etc/group": b"root:x:0:\nnogroup:x:65534:\nnobody:x:65534:\n",
    "www/index.html": b"<html><body><h1>r8s busybox</h1></body></html>\n",
}
layer = io.BytesIO()
with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as t:
    for d, mode in [("bin", 0o755), ("etc", 0o755), ("root", 0o700), ("tmp", 0o1777), ("www", 0o755)]:
        t.addfile(info(d, tarfile.DIRTYPE, mode))
    with open(busybox, "rb") as f:
        data = f.read()
    t.addfile(info("bin/busybox", tarfile.REGTYPE, 0o755, len(data)), io.BytesIO(data))
    for a in sorted(set(applets) - {"busybox"}):
        t.addfile(info(f"bin/{a}", tarfile.SYMTYPE, 0o777, link="busybox"))
    for p in sorted(files):
        t.addfile(info(p, tarfile.REGTYPE, 0o644, len(files[p])), io.BytesIO(files[p]))
layer_tar = layer.getvalue()
diff_id = "sha256:" + hashlib.sha256(layer_tar).hexdigest()
layer_gz = gzip.compress(layer_tar, compresslevel=9, mtime=0)

def blob(data):
    return "sha256:" + hashlib.sha256(data).hexdigest(), data

config = json.dumps({
    "created": "2000-01-01T00:00:00Z",
    "architecture": arch,
    "os": "linux",
    "config": {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": ["sh"],
    },
    "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    "history": [{"created": "2000-01-01T00:00:00Z", "created_by": "tools/build-busybox-image.sh"}],
}, sort_keys=True, separators=(",", ":")).encode()
cfg_digest, _ = blob(config)
layer_digest, _ = blob(layer_gz)
manifest = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest, "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": len(layer_gz)}],
}, sort_keys=True, separators=(",", ":")).encode()
man_digest, _ = blob(manifest)
index = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": man_digest,
        "size": len(manifest),
        "platform": {"architecture": arch, "os": "linux"},
        "annotations": {"io.containerd.image.name": full, "org.opencontainers.image.ref.name": full},
    }],
}, sort_keys=True, separators=(",", ":")).encode()
layout = b'{"imageLayoutVersion":"1.0.0"}'

tmp = out + ".tmp"
with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as t:
    t.addfile(info("blobs", tarfile.DIRTYPE, 0o755))
    t.addfile(info("blobs/sha256", tarfile.DIRTYPE, 0o755))
    for digest, data in sorted([blob(config), blob(layer_gz), blob(manifest)]):
        t.addfile(info("blobs/sha256/" + digest[7:], tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
    t.addfile(info("index.json", tarfile.REGTYPE, 0o644, len(index)), io.BytesIO(index))
    t.addfile(info("oci-layout", tarfile.REGTYPE, 0o644, len(layout)), io.BytesIO(layout))
os.replace(tmp, out)
print(f"{out}: {full} manifest {man_digest}")
PY
