#!/usr/bin/env bash
# Runs a command on a pure cgroup v2 host: a virtual machine booting
# Debian's kernel with only the unified hierarchy mounted (every controller
# enabled), sharing this machine's root filesystem read-only over 9p, with
# tmpfs on /tmp, /run, /var/tmp and /root. The 9p mount becomes the root
# with switch_root, not chroot: processes exec'd into containers join the
# container's mount namespace, and from a chrooted agent they landed
# outside the container's root (an empty /proc, no volumes).
#
# Why a VM: this machine kind mounts cgroup v1 hybrid, where cpu, memory
# and pids are bound to v1 hierarchies, so no cgroup v2 group here can
# limit anything; the node agent's v2 path needs a kernel of its own. The
# VM runs under qemu's TCG emulator: /dev/kvm exists here but a guest does
# not get past the BIOS with it (the host itself is a nested-PVM guest).
# TCG makes the guest some 30 times slower, so run few tests in it.
#
# Usage: bash tools/cgroup-v2-vm.sh COMMAND [ARGS...]   (as root)
#   e.g. bash tools/cgroup-v2-vm.sh target/debug/deps/e2e_node-<hash> --test-threads=1 cgroup_v2
# Installs qemu-system-x86, kmod and busybox-static, and downloads the
# kernel package (into /var/cache/r8s-v2vm), when missing. Prints the
# guest console; exits with the command's exit code.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
[ -x /sbin/depmod ] || need+=(kmod)
command -v busybox >/dev/null || need+=(busybox-static)
if [ "${#need[@]}" -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
kpkg="${R8S_VM_KERNEL_PKG:-linux-image-amd64}"
cache=/var/cache/r8s-v2vm
if [ ! -d "$cache/root/boot" ]; then
  rm -rf "$cache" && mkdir -p "$cache/dl"
  # The meta package names the current kernel image package.
  (cd "$cache/dl" && apt-get download "$kpkg" >/dev/null 2>&1)
  real=$(dpkg-deb -f "$cache"/dl/*.deb Depends | tr ',' '\n' | grep -o 'linux-image-[^ ]*' | head -1)
  [ -n "$real" ] && (cd "$cache/dl" && apt-get download "$real" >/dev/null 2>&1)
  for d in "$cache"/dl/linux-image-[0-9]*.deb; do dpkg -x "$d" "$cache/root"; done
  rm -rf "$cache/dl"
  /sbin/depmod -b "$cache/root" "$(ls "$cache/root/lib/modules")"
fi
kv=$(ls "$cache/root/lib/modules")
# The guest's modules are bound over the host's (read-only) module
# directory, which must therefore exist.
mkdir -p /usr/lib/modules

work=$(mktemp -d /var/tmp/r8s-v2vm.XXXXXX)
trap 'rm -rf "$work"' EXIT
# The command, run from the current directory (not under /tmp: the guest
# has its own /tmp).
{
  printf 'cd %q\n' "$PWD"
  printf '%q ' "$@"
  printf '\n'
} >"$work/cmd.sh"

ird="$work/initrd"
mkdir -p "$ird"/{bin,dev,proc,sys,host,mods}
cp "$(command -v busybox)" "$ird/bin/busybox"
early="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci netfs fscache 9pnet 9pnet_virtio 9p"
for m in $early; do
  f=$(grep -E "/$m.ko(\.[a-z]+)?:" "$cache/root/lib/modules/$kv/modules.dep" | cut -d: -f1 || true)
  [ -n "$f" ] && cp "$cache/root/lib/modules/$kv/$f" "$ird/mods/$m.ko"
done
cat >"$ird/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $early; do [ -f /mods/\$m.ko ] && insmod /mods/\$m.ko; done
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro host /host || { dmesg | tail; poweroff -f; }
mount --bind /host$cache/root/lib/modules /host/usr/lib/modules
for d in tmp run var/tmp root; do mount -t tmpfs -o mode=1777 tmpfs /host/\$d; done
mkdir -p /host/run/netns
mount --move /proc /host/proc; mount --move /sys /host/sys; mount --move /dev /host/dev
exec switch_root /host /bin/sh -c '
  mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs shm /dev/shm
  mount -t cgroup2 cgroup2 /sys/fs/cgroup
  echo "+cpu +cpuset +memory +pids +io" > /sys/fs/cgroup/cgroup.subtree_control
  for m in overlay bridge veth nf_tables nft_chain_nat nft_nat; do modprobe \$m; done
  ip link set lo up
  echo "r8s-vm: kernel \$(uname -r), cgroup2 controllers: \$(cat /sys/fs/cgroup/cgroup.subtree_control)"
  export HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  sh /host-cmd.sh
  echo "r8s-vm: exit \$?"
  echo o > /proc/sysrq-trigger; sleep 60
'
EOF
# The command file sits in the initrd, reachable from the chroot through
# a bind mount made before it.
cp "$work/cmd.sh" "$ird/cmd.sh"
sed -i "s|^mount --move /proc /host/proc|touch /host/tmp/.cmd; mount --bind /cmd.sh /host/tmp/.cmd\\nmount --move /proc /host/proc|" "$ird/init"
sed -i "s|sh /host-cmd.sh|sh /tmp/.cmd|" "$ird/init"
chmod +x "$ird/init"
(cd "$ird" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$work/initrd.gz"

console="$work/console.log"
timeout "${R8S_VM_TIMEOUT:-3000}" qemu-system-x86_64 -cpu max -smp "$(nproc)" -m 4096 \
  -kernel "$cache/root/boot/vmlinuz-$kv" -initrd "$work/initrd.gz" \
  -append "console=ttyS0 quiet panic=-1" \
  -virtfs local,path=/,mount_tag=host,security_model=passthrough,readonly=on,multidevs=remap \
  -nographic -no-reboot -serial file:"$console" -monitor none >/dev/null 2>&1 || true
# The console without the firmware's screen control codes.
sed -e 's/\x1b\[[0-9;?]*[a-zA-Z]//g' -e 's/\x1bc//g' "$console" | grep -v -e '^SeaBIOS' -e '^iPXE' -e 'Press Ctrl-B' -e '^Booting from' -e '^\s*$' || true
code=$(sed -n 's/.*r8s-vm: exit \([0-9]*\).*/\1/p' "$console" | tail -1)
[ -n "$code" ] || { echo "cgroup-v2-vm: the guest did not finish the command (timeout or crash)" >&2; exit 1; }
exit "$code"
