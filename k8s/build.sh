#!/usr/bin/env bash
# Build the test control plane once and cache it outside the repo:
#   ~/.cache/runqscale/k8s-<K8S_VERSION>/bin/{kube-apiserver,kube-controller-manager,kube-scheduler,kubectl,etcd,kwok,kubelet}
# Idempotent: a binary that already exists is not rebuilt. Heavy: run it niced
#   nohup nice -n 19 k8s/build.sh > ~/.cache/runqscale/build.log 2>&1 &
# Sources come only from the Go module proxy (GOPROXY as configured; GOTOOLCHAIN=local).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
cache=${RUNQSCALE_CACHE:-$HOME/.cache/runqscale}
out=${K8S_BIN_DIR:-$cache/k8s-$K8S_VERSION/bin}
mkdir -p "$out"
export GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:-} -buildvcs=false -mod=mod"
export GOMAXPROCS=${GOMAXPROCS:-2}
minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
staging=v0.$minor.${K8S_VERSION##*.}

grep -q "k8s.io/kubernetes $K8S_VERSION" "$here/kube/go.mod" \
  || { echo "k8s/kube/go.mod does not require k8s.io/kubernetes $K8S_VERSION (versions.env)"; exit 1; }
grep -q "k8s.io/api => k8s.io/api $staging" "$here/kube/go.mod" \
  || { echo "k8s/kube/go.mod staging replaces are not at $staging"; exit 1; }

# Version stamps so `kubectl version` and /version report the pinned release, not v0.0.0-master.
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

build() {  # build <module dir> <output name> <package> [ldflags]
  local dir=$1 name=$2 pkg=$3 flags=${4:--s -w}
  if [ -x "$out/$name" ]; then echo "skip $name (cached in $out)"; return; fi
  echo "build $name from $pkg ($(date +%T))"
  local t0=$SECONDS
  (cd "$here/$dir" && go build -trimpath -ldflags "$flags" -o "$out/$name.tmp" "$pkg")
  mv "$out/$name.tmp" "$out/$name"
  echo "built $name in $((SECONDS - t0)) s"
}

# Most useful first: etcd + kube-apiserver + kubectl already serve the dry-run and RBAC tests.
build etcd etcd .
for cmd in kube-apiserver kubectl kube-controller-manager kube-scheduler; do
  build kube "$cmd" "k8s.io/kubernetes/cmd/$cmd" "$ldflags"
done
build kwok kwok sigs.k8s.io/kwok/cmd/kwok
# The real node (make k8s-up): the kubelet beside containerd; last, it is the longest build.
build kube kubelet k8s.io/kubernetes/cmd/kubelet "$ldflags"
printf 'K8S_VERSION=%s\nETCD_VERSION=%s\nKWOK_VERSION=%s\n' "$K8S_VERSION" "$ETCD_VERSION" "$KWOK_VERSION" > "$out/VERSIONS"
echo "control plane binaries in $out"
