#!/usr/bin/env bash
# The test VM (tests/vm_helpers.py boots it): Debian's Linux 6.1 kernel and a busybox initramfs
# whose /init (tests/vm/init) mounts this machine's root read-only over virtio 9p, gives it
# pure cgroup v2, bpffs and tracefs, chroots into it and runs one command.
#   tests/vm/build.sh        -> prints the cache dir holding vmlinuz, initramfs.gz, kernel.release
# Idempotent: installs only missing Debian packages (qemu-system-x86, busybox-static), downloads
# and extracts the kernel package once (apt-get download + dpkg-deb: the host's /boot and
# /lib/modules are untouched), and rebuilds the initramfs only when this script or init change.
# Everything lives in ~/.cache/runqscale/vm; nothing is written to the repository.
#
# The kernel is the generic flavour (linux-image-amd64, 6.1 on bookworm), not -cloud-amd64:
# the cloud flavour is built without 9p (CONFIG_NET_9P is not set), so it cannot mount the host.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${RUNQSCALE_CACHE:-$HOME/.cache/runqscale}/vm
mkdir -p "$cache/debs"
log() { echo "vm: $*" >&2; }

pkgs=(qemu-system-x86 busybox-static kmod cpio)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# -- the kernel: the image package linux-image-amd64 currently depends on -------------------------
meta=${RUNQSCALE_VM_KERNEL_PACKAGE:-linux-image-amd64}
pkg=$(apt-cache depends "$meta" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -1)
[ -n "$pkg" ] || { log "cannot resolve $meta to a kernel image package (apt-get update?)"; exit 1; }
kdir=$cache/$pkg
if [ ! -f "$kdir/.complete" ]; then
  deb=$(ls "$cache"/debs/"${pkg}"_*.deb 2>/dev/null | head -1 || true)
  if [ -z "$deb" ]; then
    log "downloading $pkg"
    # apt's sandbox user cannot write into root's home: download in a temporary dir it can reach
    tmp=$(mktemp -d); chmod 755 "$tmp"
    (cd "$tmp" && apt-get download -q "$pkg" 2>&1 | grep -v unsandboxed >&2 || true)
    mv "$tmp"/*.deb "$cache/debs/"; rmdir "$tmp"
    deb=$(ls "$cache"/debs/"${pkg}"_*.deb | head -1)
  fi
  log "extracting $(basename "$deb")"
  rm -rf "$kdir.tmp"; mkdir -p "$kdir.tmp"
  # only what the VM needs: the kernel, its config, module metadata and the virtio/9p modules
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$kdir.tmp" --wildcards \
    './boot/*' './lib/modules/*/modules.*' './lib/modules/*/kernel/drivers/virtio/*' \
    './lib/modules/*/kernel/net/9p/*' './lib/modules/*/kernel/fs/9p/*' \
    './lib/modules/*/kernel/fs/netfs/*' './lib/modules/*/kernel/fs/fscache/*' \
    './lib/modules/*/kernel/drivers/char/hw_random/*'
  rel=$(ls "$kdir.tmp/lib/modules" | head -1)
  depmod -b "$kdir.tmp" "$rel"  # the package leaves modules.dep to its postinst
  cp "$kdir.tmp/boot/vmlinuz-$rel" "$kdir.tmp/vmlinuz"
  echo "$rel" > "$kdir.tmp/kernel.release"
  touch "$kdir.tmp/.complete"
  rm -rf "$kdir"; mv "$kdir.tmp" "$kdir"
fi
rel=$(cat "$kdir/kernel.release")

# -- the initramfs: busybox, the modules in load order, init ------------------------------------------
mods=(virtio_pci 9pnet_virtio 9p virtio-rng)
key=$( (cat "$0" "$here/init"; echo "$rel ${mods[*]}"; dpkg-query -W -f='${Version}' busybox-static) \
       | sha256sum | cut -c1-16)
if [ "$(cat "$kdir/initramfs.key" 2>/dev/null)" != "$key" ]; then
  log "building the initramfs for $rel"
  w=$(mktemp -d); trap 'rm -rf "$w"' EXIT
  mkdir -p "$w"/{bin,dev,proc,sys,host,lib/modules}
  cp /bin/busybox "$w/bin/busybox"
  # insmod lines with dependencies first, each module once, in the order modprobe would load them
  modprobe -d "$kdir" -S "$rel" --show-depends -a "${mods[@]}" | awk '$1 == "insmod" && !seen[$2]++ {print $2}' \
    | while read -r ko; do
        cp "$ko" "$w/lib/modules/"
        basename "$ko"
      done > "$w/lib/modules/load-order"
  cp "$here/init" "$w/init"; chmod 755 "$w/init"
  (cd "$w" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) > "$kdir/initramfs.gz.tmp"
  mv "$kdir/initramfs.gz.tmp" "$kdir/initramfs.gz"
  echo "$key" > "$kdir/initramfs.key"
  rm -rf "$w"; trap - EXIT
fi
echo "$kdir"
