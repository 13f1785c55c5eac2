#!/usr/bin/env bash
# The real node's images, built here and imported into its containerd; nothing is ever pulled.
#   k8s/node/images.sh [OUT_DIR]   -> OUT_DIR/{pause,runqscale}.tar (OCI archives for `ctr import`)
#   BCC=1 k8s/node/images.sh        also OUT_DIR/runqscale-bcc.tar (the agent's bcc backend)
# - pause: pause.c compiled static, the only file of its image.
# - runqscale: a Debian bookworm minbase rootfs (debootstrap from the mirror apt uses; python3,
#   python3-venv, libbpf1) as one layer, cached; the project's wheel and its dependencies in a venv
#   at /opt/runqscale as a second layer, rebuilt when the sources change. No compiler in the image:
#   the CO-RE object is compiled on the host (make bpf) and shipped inside the wheel.
# Needs root, debootstrap, umoci, gcc (make node-deps). Idempotent: every step is cached by content.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${RUNQSCALE_CACHE:-$HOME/.cache/runqscale}/node
out=${1:-$cache/images}
mkdir -p "$cache" "$out"
mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
mirror=${mirror:-http://deb.debian.org/debian}

archive() {  # archive <layout dir> <tar>: an OCI layout as one tar (ctr images import reads it)
  tar -C "$1" -cf "$2.tmp" . && mv "$2.tmp" "$2"
}

# -- pause -------------------------------------------------------------------------------------------
pause_key=$(sha256sum "$here/pause.c" "$0" | sha256sum | cut -c1-16)
if [ "$(cat "$out/pause.key" 2>/dev/null)" != "$pause_key" ]; then
  echo "image pause ($(date +%T))"
  w=$(mktemp -d); trap 'rm -rf "$w"' EXIT
  mkdir -p "$w/root"
  gcc -static -O2 -Wall -Wextra -Werror -o "$w/root/pause" "$here/pause.c"
  strip "$w/root/pause"
  umoci init --layout "$w/oci"
  umoci new --image "$w/oci:dev"
  umoci insert --image "$w/oci:dev" "$w/root/pause" /pause
  umoci config --image "$w/oci:dev" --config.entrypoint /pause --config.user 65535:65535
  archive "$w/oci" "$out/pause.tar"
  echo "$pause_key" > "$out/pause.key"
  rm -rf "$w"; trap - EXIT
fi

# -- Debian base rootfs and its layer (cached until this script changes its package list) --------------
pkgs=python3,python3-venv,libbpf1,ca-certificates
base=$cache/rootfs-base
if [ ! -f "$base/.complete" ] || [ "$(cat "$base/.complete")" != "$pkgs" ]; then
  echo "debootstrap bookworm minbase +$pkgs from $mirror ($(date +%T))"
  rm -rf "$base.tmp"
  nice -n 19 debootstrap --variant=minbase --include="$pkgs" bookworm "$base.tmp" "$mirror"
  rm -rf "$base.tmp"/var/cache/apt/archives/*.deb "$base.tmp"/var/lib/apt/lists/*
  echo "$pkgs" > "$base.tmp/.complete"
  rm -rf "$base"; mv "$base.tmp" "$base"
  rm -rf "$cache/oci-base"
fi
if [ ! -f "$cache/oci-base/index.json" ]; then
  echo "base layer ($(date +%T))"
  rm -rf "$cache/oci-base.tmp"
  umoci init --layout "$cache/oci-base.tmp"
  umoci new --image "$cache/oci-base.tmp:base"
  # one layer holding the whole rootfs (.complete is only the cache's marker)
  nice -n 19 umoci insert --image "$cache/oci-base.tmp:base" "$base" /
  mv "$cache/oci-base.tmp" "$cache/oci-base"
fi

# -- the project: wheel + dependencies in /opt/runqscale --------------------------------------------------
[ -f "$repo/probes/runqlat.bpf.o" ] || { echo "no probes/runqlat.bpf.o: run make bpf first"; exit 1; }
src_key=$( (cd "$repo" && find setup.cfg pyproject.toml README.md runqscale probes agent exporter \
  scaler validation deathstarbench -type f \( -name '*.py' -o -name '*.bpf.o' -o -name '*.bpf.c' \
  -o -name '*.h' -o -name '*.cfg' -o -name '*.toml' -o -name '*.md' \) -not -name vmlinux.h \
  -not -path '*/__pycache__/*' | sort | xargs sha256sum; sha256sum "$0"; cat "$base/.complete") \
  | sha256sum | cut -c1-16)
if [ "$(cat "$out/runqscale.key" 2>/dev/null)" != "$src_key" ]; then
  echo "image runqscale ($(date +%T), sources $src_key)"
  w=$(mktemp -d)
  cleanup() {
    for m in "$w/rootfs/wheels" "$w/rootfs/opt/runqscale" "$w/rootfs/proc" "$w/rootfs"; do
      mountpoint -q "$m" && umount "$m"
    done
    rm -rf "$w"
  }
  trap cleanup EXIT
  # Wheels on the host (same Debian, same python3.11 ABI), installed by the image's own python in
  # a chroot of the base rootfs (an overlay keeps the cached rootfs untouched).
  mkdir -p "$w/wheels" "$w/venv" "$w/upper" "$w/work" "$w/rootfs"
  (cd "$repo" && nice -n 19 python3 -m pip wheel -q --no-cache-dir -w "$w/wheels" . >/dev/null)
  mount -t overlay overlay -o "lowerdir=$base,upperdir=$w/upper,workdir=$w/work" "$w/rootfs"
  mkdir -p "$w/rootfs/wheels" "$w/rootfs/opt/runqscale"
  mount --bind "$w/wheels" "$w/rootfs/wheels"
  mount --bind "$w/venv" "$w/rootfs/opt/runqscale"
  mount -t proc proc "$w/rootfs/proc"
  chroot "$w/rootfs" /usr/bin/python3 -m venv /opt/runqscale
  chroot "$w/rootfs" env -u PIP_FIND_LINKS PIP_DISABLE_PIP_VERSION_CHECK=1 \
    /opt/runqscale/bin/pip install -q \
    --no-index --no-cache-dir --find-links /wheels runqscale
  chroot "$w/rootfs" /opt/runqscale/bin/python -m compileall -q /opt/runqscale >/dev/null || true
  # -OO bytecode as the Containerfile makes it (the DaemonSet runs the agent with -OO): the venv's,
  # and the standard library's, which goes into a layer of its own
  chroot "$w/rootfs" /opt/runqscale/bin/python -OO -m compileall -q /opt/runqscale >/dev/null || true
  stdlib=$(chroot "$w/rootfs" /usr/bin/python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')
  chroot "$w/rootfs" /usr/bin/python3 -OO -m compileall -q "$stdlib" >/dev/null
  # compileall's status is not the proof (a dependency's odd file may fail it): the agent's own
  # start-up modules must have their -OO bytecode, or it compiles them at every start
  chroot "$w/rootfs" /opt/runqscale/bin/python -OO -c 'import importlib.util as u, os, sys
for m in ("socketserver", "ssl", "json", "argparse", "runqscale.agent.__main__",
          "runqscale.agent.daemon", "numpy"):
    src = u.find_spec(m).origin
    if not os.path.exists(u.cache_from_source(src, optimization=2)):
        sys.exit(f"no -OO bytecode for {m} ({src})")'
  # only the new .opt-2.pyc files, copied out of the overlay's upper dir (whose copied-up
  # directories may carry overlayfs xattrs) into a clean tree for their own layer
  mkdir -p "$w/stdlib-opt2"
  (cd "$w/upper$stdlib" && find . -name '*.opt-2.pyc' -exec cp --parents -t "$w/stdlib-opt2/" {} +)
  chroot "$w/rootfs" /opt/runqscale/bin/python -c \
    'import runqscale.probes, os, sys; p = os.path.dirname(runqscale.probes.__file__); sys.exit(not os.path.exists(p + "/runqlat.bpf.o"))'
  rm -rf "$w/oci"; cp -al "$cache/oci-base" "$w/oci"
  umoci tag --image "$w/oci:base" dev
  umoci rm --image "$w/oci:base"
  nice -n 19 umoci insert --image "$w/oci:dev" "$w/venv" /opt/runqscale
  nice -n 19 umoci insert --image "$w/oci:dev" "$w/stdlib-opt2" "$stdlib"
  # as the Containerfile: the agent overrides the user (uid 0 + three capabilities), the scaler
  # and the workloads run as 65532
  umoci config --image "$w/oci:dev" --config.user 65532:65532 \
    --config.env PATH=/opt/runqscale/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.env PYTHONDONTWRITEBYTECODE=1 --config.env PYTHONUNBUFFERED=1 \
    --config.cmd runqscale --config.cmd --help
  umoci gc --layout "$w/oci"
  archive "$w/oci" "$out/runqscale.tar"
  echo "$src_key" > "$out/runqscale.key"
  cleanup; trap - EXIT
fi

# -- runqscale-bcc: the same package over Debian's python3-bpfcc (LLVM inside: ~430 MB more) -----------
# One layer (the merged rootfs): apt's changes to the base would otherwise need OCI whiteouts.
if [ "${BCC:-}" = 1 ] && [ "$(cat "$out/runqscale-bcc.key" 2>/dev/null)" != "$src_key" ]; then
  echo "image runqscale-bcc ($(date +%T))"
  w=$(mktemp -d)
  cleanup() {
    for m in "$w/rootfs/wheels" "$w/rootfs/proc" "$w/rootfs"; do
      mountpoint -q "$m" && umount "$m"
    done
    rm -rf "$w"
  }
  trap cleanup EXIT
  mkdir -p "$w/wheels" "$w/upper" "$w/work" "$w/rootfs"
  (cd "$repo" && nice -n 19 python3 -m pip wheel -q --no-cache-dir -w "$w/wheels" . >/dev/null)
  mount -t overlay overlay -o "lowerdir=$base,upperdir=$w/upper,workdir=$w/work" "$w/rootfs"
  mkdir -p "$w/rootfs/wheels"
  mount --bind "$w/wheels" "$w/rootfs/wheels"
  mount -t proc proc "$w/rootfs/proc"
  cp /etc/resolv.conf "$w/rootfs/etc/resolv.conf"
  echo "deb $mirror bookworm main" > "$w/rootfs/etc/apt/sources.list"
  chroot "$w/rootfs" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends python3-bpfcc >/dev/null 2>&1'
  # --system-site-packages: Debian's bcc binding lives in /usr/lib/python3/dist-packages
  chroot "$w/rootfs" /usr/bin/python3 -m venv --system-site-packages /opt/runqscale
  chroot "$w/rootfs" env -u PIP_FIND_LINKS PIP_DISABLE_PIP_VERSION_CHECK=1 \
    /opt/runqscale/bin/pip install -q --no-index --no-cache-dir --find-links /wheels runqscale
  chroot "$w/rootfs" /opt/runqscale/bin/python -c 'import bcc, runqscale.probes'
  # the agent runs with -OO (the DaemonSet): its bytecode, as for the image above
  stdlib=$(chroot "$w/rootfs" /usr/bin/python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')
  chroot "$w/rootfs" /usr/bin/python3 -OO -m compileall -q "$stdlib" >/dev/null
  chroot "$w/rootfs" /usr/bin/python3 -OO -m compileall -q /opt/runqscale \
    /usr/lib/python3/dist-packages >/dev/null || true
  umount "$w/rootfs/wheels" "$w/rootfs/proc"
  rmdir "$w/rootfs/wheels"
  rm -rf "$w/rootfs"/var/lib/apt/lists/* "$w/rootfs"/var/cache/apt/*.bin "$w/rootfs/.complete"
  umoci init --layout "$w/oci"
  umoci new --image "$w/oci:dev"
  nice -n 19 umoci insert --image "$w/oci:dev" "$w/rootfs" /
  umoci config --image "$w/oci:dev" --config.user 65532:65532 \
    --config.env PATH=/opt/runqscale/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.env PYTHONDONTWRITEBYTECODE=1 --config.env PYTHONUNBUFFERED=1 \
    --config.cmd runqscale --config.cmd --help
  archive "$w/oci" "$out/runqscale-bcc.tar"
  echo "$src_key" > "$out/runqscale-bcc.key"
  cleanup; trap - EXIT
fi
echo "images in $out: pause.tar (pause:dev) runqscale.tar (runqscale:dev)" \
  "$([ "${BCC:-}" = 1 ] && echo 'runqscale-bcc.tar (runqscale-bcc:dev)')"
