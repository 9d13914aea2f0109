# The two commands of the README:
#   make run    installs Flow into .venv and runs the example job as a task on the local provider
#   make test   installs the development tools and runs every check and test (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP_RUN  := $(VENV)/.installed-run
STAMP_DEV  := $(VENV)/.installed-dev
# The TypeScript and Go clients (clients/, examples/ts, examples/go): `make test` and `make gen`
# install their pinned tools; `make run` needs neither Node nor Go.
STAMP_NPM  := node_modules/.installed
GO_TOOLS   := build/go-tools
STAMP_GO   := $(GO_TOOLS)/.installed
GO         ?= go
GO_BUILD   := $(GO) build -buildvcs=false
# torch for the multi-node all-reduce test (tests/e2e/test_multinode.py), kept out of .venv.
TORCH_VENV := build/torch-venv
STAMP_TORCH := $(TORCH_VENV)/.installed
# The real Kubernetes test cluster (tests/k8s): etcd, Kubernetes, KWOK, CoreDNS and the pause image
# built into build/k8s, the base image (Debian minbase + python3) into build/images, with the
# packages they need (apt). Cold: about 15 minutes on 2 cores, once; the tests start the cluster themselves
# (tools/k8s-stack start --lease, a session fixture). Root only: elsewhere tests/k8s skips.
STAMP_K8S := build/k8s/.built
# Debian's podman, configured for this machine class, with the base image loaded (tests/images,
# the local provider's image= tasks). Root only, like the cluster.
STAMP_PODMAN := build/images/.podman-ready

.PHONY: run test check gen bench bench-clients clients clean torch-venv k8s podman

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q .
	touch $@

$(STAMP_DEV): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@ $(STAMP_RUN)

# npm ci: the exact versions of package-lock.json (pinned in clients/ts/package.json) into
# ./node_modules, where gen/ts, clients/ts and examples/ts all find them.
$(STAMP_NPM): package.json package-lock.json clients/ts/package.json
	@command -v node >/dev/null && command -v npm >/dev/null || \
	  { echo "make: Node.js 20+ with npm is required (the TypeScript client and its tests); install it" >&2; exit 1; }
	npm ci --no-audit --no-fund
	touch $@

# Go: the modules of clients/go and examples/go, protoc-gen-go and protoc-gen-go-grpc at the
# versions pinned in clients/go/go.mod (built into $(GO_TOOLS)/bin for tools/gen), and one build
# of everything so the tests start from a warm build cache.
$(STAMP_GO): clients/go/go.mod clients/go/go.sum examples/go/go.mod examples/go/go.sum
	@command -v $(GO) >/dev/null || \
	  { echo "make: Go 1.24+ is required (the Go client and its tests); install it" >&2; exit 1; }
	mkdir -p $(GO_TOOLS)/bin
	cd clients/go && $(GO) mod download && \
	  $(GO_BUILD) -o ../../$(GO_TOOLS)/bin/ google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc && \
	  $(GO_BUILD) ./...
	cd examples/go && $(GO) mod download && $(GO_BUILD) ./...
	touch $@

$(STAMP_TORCH):
	$(PYTHON) -m venv $(TORCH_VENV)
	$(TORCH_VENV)/bin/python -m pip install -q torch==2.15.0
	touch $@

torch-venv: $(STAMP_TORCH)

$(STAMP_K8S): tools/k8s-stack tools/base-image tools/oci-archive
	@if [ "$$(id -u)" -ne 0 ]; then echo "make: not root: skipping the Kubernetes test cluster's build (tests/k8s will skip)" >&2; \
	else tools/k8s-stack build && touch $@; fi

$(STAMP_PODMAN): tools/podman-setup tools/base-image tools/oci-archive
	@if [ "$$(id -u)" -ne 0 ]; then echo "make: not root: skipping podman's setup (tests/images will skip)" >&2; \
	else tools/podman-setup setup && touch $@; fi

k8s: $(STAMP_K8S)

podman: $(STAMP_PODMAN)

clients: $(STAMP_NPM) $(STAMP_GO)

run: $(STAMP_RUN)
	cd examples && ../$(BIN)/flow run "python3 train.py --epochs 3"

test: $(STAMP_DEV) $(STAMP_NPM) $(STAMP_GO) $(STAMP_TORCH) $(STAMP_K8S) $(STAMP_PODMAN)
	tools/check

gen: $(STAMP_DEV) $(STAMP_NPM) $(STAMP_GO)
	tools/gen

bench: $(STAMP_DEV)
	$(BIN)/python bench/run_all.py

bench-clients: $(STAMP_DEV) $(STAMP_NPM) $(STAMP_GO)
	$(BIN)/python bench/bench_clients.py

clean:
	rm -rf $(VENV) build node_modules *.egg-info .mypy_cache .ruff_cache .pytest_cache
