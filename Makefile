# runqscale — two commands on a fresh machine: `make demo` and `make test`.
# Every step below is idempotent: it installs only what is missing.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
KREL := $(shell uname -r)
APT_PKGS := clang llvm libbpf-dev libbpf1 bpftool python3-bpfcc bpfcc-tools libbpf-tools \
            linux-headers-amd64 stress-ng prometheus python3-venv nginx-light \
            redis-server memcached
BPF_OBJ := probes/runqlat.bpf.o

.PHONY: demo test bench bench-validate deps demo-deps system-deps kernel-headers tracefs bpf lint clean

# The signal check (~15 s), showar vs hpa vs phpa-knn on the WC98 day-25 trace (~9 min), then
# the emulated DeathStarBench social network under showar and hpa + the affinity experiment (~7 min).
TRACE ?= data/worldcup98/wc_day25_per_minute.csv
# It ends with the comparison tables (one screen) and where the reports and plots are.
demo: demo-deps
	$(VENV)/bin/runqscale validate stress --out out/stress || true
	$(VENV)/bin/runqscale validate --trace $(TRACE) --policies showar,hpa,phpa-knn \
	  --duration 150s --out out/demo
	$(VENV)/bin/runqscale validate --app deathstarbench --trace $(TRACE) --policies showar,hpa \
	  --duration 90s --affinity-seconds 20s --out out/dsb
	@echo; $(VENV)/bin/runqscale validate summary out/demo/report.json out/dsb/report.json
	@echo; echo "reports: out/demo/report.json, out/dsb/report.json (details.json beside each)"; \
	  echo "plots:   $$(ls out/demo/*.png out/dsb/*.png 2>/dev/null | tr '\n' ' ')"; \
	  echo "signal check: out/stress/stress.json, out/stress/stress.png"

test: deps
	$(VENV)/bin/ruff check .
	CI=$${CI:-} $(PY) -m pytest -q -ra $(PYTEST_ARGS)

# Benchmarks, not tests: each prints ratios measured in one run and writes JSON.
bench: deps
	mkdir -p bench-results
	$(PY) -m runqscale.probes.bench --out bench-results/probes.json
	$(PY) -m runqscale.probes.bench_breakdown --out bench-results/probe-breakdown.json
	$(PY) -m runqscale.agent.bench --out bench-results/agent.json
	$(PY) -m runqscale.scaler.bench --out bench-results/scaler.json

# The benchmark (hours: prints progress, resumes where it stopped): on the day-25 trace, the
# per-second 1998-06-25 trace and DeathStarBench, showar vs hpa, vpa, phpa-knn in ABBA pairs
# (comparisons with 95 % CIs), and each policy's knob swept (showar's margin 1/2/3 sigma, hpa and
# phpa-knn 50/70/90 %) for the cost-vs-p99 Pareto plots. Results: out/bench-validate/.
# BENCH_ARGS narrows it, e.g. BENCH_ARGS="--only day25 --cpu-policies hpa".
TRACE_PER_SECOND ?= data/worldcup98/wc_1998-06-25_per_second.csv
GRAPH ?= data/deathstarbench/socfb-Reed98.edges
BENCH_DURATION ?= 150s
BENCH_REPEATS ?= 3
bench-validate: demo-deps
	$(PY) -m runqscale.validation.bench --out out/bench-validate --duration $(BENCH_DURATION) \
	  --repeats $(BENCH_REPEATS) --day25 $(TRACE) --per-second $(TRACE_PER_SECOND) --graph $(GRAPH) \
	  $(BENCH_ARGS)

# What the demo runs (no Kubernetes); the tests also need the control plane built from source.
demo-deps: system-deps kernel-headers tracefs $(VENV)/.installed $(BPF_OBJ)
deps: demo-deps k8s-build node-deps vm

# Debian packages: the BPF toolchain, BCC and its tools, stress-ng, a real Prometheus, nginx.
system-deps:
	@missing=$$(for p in $(APT_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# BCC compiles against kernel headers; Debian's 6.1 headers work for programs that read only
# tracepoint fields (no struct offsets), which is all the bcc backend does.
kernel-headers: system-deps
	@hdr=$$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -1); \
	common=$$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -1); \
	mkdir -p /lib/modules/$(KREL); \
	[ -e /lib/modules/$(KREL)/build ] || ln -s $$hdr /lib/modules/$(KREL)/build; \
	[ -e /lib/modules/$(KREL)/source ] || ln -s $$common /lib/modules/$(KREL)/source

# A virtualenv made from Debian's python3 so it also sees Debian's BCC binding.
# The bcc backend reads tracepoint formats from tracefs; fresh machines may not have it mounted.
tracefs:
	@mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing

$(VENV)/.installed: setup.cfg pyproject.toml
	[ -x $(PY) ] || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=23" "setuptools>=64" wheel
	$(PY) -m pip install -q -e '.[test,plot]'
	touch $@

bpf: $(BPF_OBJ)

# CO-RE: vmlinux.h comes from the running kernel's BTF, so no kernel headers are needed.
probes/vmlinux.h:
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@

$(BPF_OBJ): probes/runqlat.bpf.c probes/runqlat.h probes/vmlinux.h
	clang -g -O2 -target bpf -D__TARGET_ARCH_x86 -I probes -I /usr/include/x86_64-linux-gnu \
	  -Wall -Werror -c probes/runqlat.bpf.c -o $@.tmp
	llvm-strip -g $@.tmp -o $@ 2>/dev/null || mv $@.tmp $@
	rm -f $@.tmp

lint: deps
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) $(BPF_OBJ) probes/vmlinux.h build *.egg-info

# -- The second kernel (tests/vm/): Debian's Linux 6.1 under qemu TCG, pure cgroup v2 -------------
# build.sh installs qemu-system-x86/busybox-static/kmod/cpio if missing and caches the kernel and
# initramfs in ~/.cache/runqscale/vm; test-vm boots it once and runs the CO-RE, cgroup v2 quota and
# scaler-signal tests inside (tests/test_vm_kernel61.py).
.PHONY: vm test-vm
vm:
	tests/vm/build.sh >/dev/null

test-vm: vm $(VENV)/.installed $(BPF_OBJ)
	CI=$${CI:-} $(PY) -m pytest -q -ra tests/test_vm_kernel61.py $(PYTEST_ARGS)

# -- Kubernetes test control plane (k8s/): built once from source, cached outside the repo ---------
K8S_VERSION := $(shell sed -n 's/^K8S_VERSION=//p' k8s/versions.env)
K8S_BIN := $(HOME)/.cache/runqscale/k8s-$(K8S_VERSION)/bin

.PHONY: k8s-build k8s-up k8s-down test-k8s node-deps node-images

# The real node: Debian's containerd 1.6 + runc + CNI plugins; images built locally (never
# pulled) by k8s/node/images.sh from a debootstrap rootfs, cached in ~/.cache/runqscale/node.
NODE_PKGS := containerd runc containernetworking-plugins umoci debootstrap iptables gcc libc6-dev
node-deps:
	@missing=$$(for p in $(NODE_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

node-images: node-deps $(BPF_OBJ)
	k8s/node/images.sh

k8s-build: $(K8S_BIN)/VERSIONS

# build.sh skips every binary already cached; VERSIONS is written last, when all six exist.
$(K8S_BIN)/VERSIONS: k8s/versions.env k8s/build.sh k8s/kube/go.mod k8s/etcd/go.mod k8s/kwok/go.mod
	GOMAXPROCS=2 nice -n 19 k8s/build.sh

# The control plane, 3 kwok nodes and one real node (containerd + kubelet, tests/node_helpers.py);
# the admin kubeconfig is left at ~/.cache/runqscale/kubeconfig.
k8s-up: k8s-build node-deps $(VENV)/.installed $(BPF_OBJ)
	$(PY) tests/k8s_helpers.py up --real-node

k8s-down:
	$(PY) tests/k8s_helpers.py down

test-k8s: k8s-build $(VENV)/.installed
	CI=$${CI:-} $(PY) -m pytest -q -ra tests/test_k8s_*.py $(PYTEST_ARGS)

# The agent+scaler image (Containerfile) with podman or buildah. Offline, make the base first:
#   debootstrap --variant=minbase bookworm rootfs http://deb.debian.org/debian, then commit it as
#   docker.io/library/debian:12-slim (buildah from scratch; copy rootfs; buildah commit).
IMAGE ?= localhost/runqscale:dev
.PHONY: image
image:
	@tool=$$(command -v podman || command -v buildah) || { echo "no podman or buildah"; exit 1; }; \
	nice -n 19 $$tool build -f Containerfile -t $(IMAGE) $(IMAGE_BUILD_ARGS) .
