# dirpv: `make demo` runs it on a local cluster; `make test` runs every test.
SHELL := /bin/bash
VERSION ?= $(shell . hack/lib.sh && dirpv_version)
COMMIT ?= $(shell . hack/lib.sh && dirpv_commit)
IMAGE ?= dirpv.io/dirpv:v0.1.0
GO ?= go
export PATH := /usr/local/go/bin:$(PATH)

.PHONY: all build tools lint image-test monitoring helm unit quota fuzz e2e bench test image docker-image cluster-up cluster-down demo demo-down

all: build

build: ## Build bin/dirpv (static).
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)" -o bin/dirpv ./cmd/dirpv

tools: ## Debian packages and the Kubernetes binaries (kubectl included), built once into a cache.
	hack/install-deps.sh
	hack/kube-build.sh

lint: ## gofmt and go vet (the manifests' unit test renders every overlay).
	@out=$$(gofmt -l cmd provisioner e2e hack manifests docs); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e/

image-test: ## Build the image index and SBOMs, and check each platform's image, binary (run under qemu-user) and SBOM.
	hack/image-test.sh

monitoring: ## Alerting rules and dashboard: promtool check and unit tests, the dashboard's queries parsed (Debian's prometheus package)
	hack/promtool-test.sh

helm: ## The Helm chart: helm 4 and 3 built once into the tools cache, then the chart's tests (lint, render, schema, same objects as kustomize).
	hack/helm-build.sh
	$(GO) test -count=1 -run '^TestHelm' ./manifests/

unit: ## Unit tests (fake clients, real filesystem under temporary directories); builds helm first, for the chart's tests.
	hack/helm-build.sh
	$(GO) test -race -count=1 ./...

quota: ## Size enforcement on real filesystems: btrfs on a loop device, XFS and ext4 in a VM (root).
	hack/quota-test.sh

# Fuzz targets, as ./package/FuzzName; append to add one.
FUZZ_TARGETS := \
	./provisioner/config/FuzzParseClass \
	./provisioner/pathname/FuzzRender \
	./provisioner/pathname/FuzzValidate \
	./provisioner/volumefs/FuzzParseMarker \
	./provisioner/volumeop/FuzzParseArgs
# A count of inputs, not a duration: Go 1.26's fuzzer can fail a target that found nothing when
# a duration ends while a worker is busy (golang/go#75804, fixed in Go 1.27).
FUZZTIME ?= 100000x

# go test fuzzes one target per run: one recipe line per target (the blank line ends each).
define fuzz-target
	$(GO) test -run='^$$' -fuzz='^$(notdir $(1))$$' -fuzztime=$(FUZZTIME) $(dir $(1))

endef

fuzz: ## Run each fuzz target for FUZZTIME (100000 inputs unless set; a duration such as 30s works too).
	$(foreach t,$(FUZZ_TARGETS),$(call fuzz-target,$(t)))

e2e: ## The end-to-end suite on a real local cluster (brought up and torn down unless one runs).
	hack/e2e.sh

bench: ## Measure on the local cluster: a table of ratios, and _output/bench.json.
	hack/bench.sh

test: tools lint image-test monitoring helm unit quota fuzz e2e ## Everything: tools, lint, the images of every platform, the alerting rules' tests, the Helm chart's tests, unit tests, quota enforcement, fuzzing (FUZZTIME each), then the e2e suite on a real cluster.

image: ## Build the dirpv image as a tarball without Docker (and import it when the local cluster runs).
	DIRPV_IMAGE=$(IMAGE) DIRPV_VERSION=$(VERSION) DIRPV_COMMIT=$(COMMIT) hack/images.sh

docker-image: ## Build the image with Docker: one platform with docker build, every platform of DIRPV_PLATFORMS with buildx.
	if docker buildx version >/dev/null 2>&1; then \
	  docker buildx build --platform "$$(. hack/lib.sh && echo $$DIRPV_PLATFORMS | tr ' ' ,)" \
	    --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t $(IMAGE) .; \
	else \
	  docker build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t $(IMAGE) .; \
	fi

cluster-up: ## A local single-node Kubernetes cluster, built from source.
	hack/cluster-up.sh

cluster-down:
	hack/cluster-down.sh

demo: ## A local cluster, dirpv from its manifests, the StatefulSet example; left running.
	hack/demo.sh

demo-down: ## Stop the demo cluster.
	hack/cluster-down.sh
