# Varve — build, test and codegen. `make test` installs every tool it needs into
# .tools/ (git-ignored, cached between runs) and runs all test tiers.

GO        ?= go
TOOLS     := $(CURDIR)/.tools
TOOLBIN   := $(TOOLS)/bin
export PATH := $(TOOLBIN):$(PATH)
export GOFLAGS := -buildvcs=false

# Pinned tool versions. buf is pinned in tools/go.mod.
MINIO_VERSION          := v0.0.0-20260212201848-7aac2a2c5b7c
PROTOC_GEN_GO_VERSION  := v1.36.12
CONNECT_GEN_VERSION    := v1.21.1

TFLINT_VERSION         := v0.64.0
NATS_VERSION           := v2.15.2
TERRAFORM              ?= terraform

MINIO_STAMP := $(TOOLS)/minio-$(MINIO_VERSION).stamp
TFLINT_STAMP := $(TOOLS)/tflint-$(TFLINT_VERSION).stamp
NATS_STAMP   := $(TOOLS)/nats-server-$(NATS_VERSION).stamp
GEN_STAMP   := $(TOOLS)/gen-$(PROTOC_GEN_GO_VERSION)-$(CONNECT_GEN_VERSION).stamp
BUF_STAMP   := $(TOOLS)/buf-$(shell sed -n 's/.*bufbuild\/buf \(v[^ ]*\).*/\1/p' tools/go.mod | head -n1).stamp

# Packages whose tests exercise concurrency run under the race detector.
RACE_PKGS := ./kafka/... ./ingest/... ./blockcache/... ./fetch/... ./scan/... ./parquet/... ./metadata/... ./node/... ./sdk/... ./tier/... ./sequencer/... ./internal/guard/...

.PHONY: soak all build test generate gen-tmp check-generated lint bench bench-go bench-check redis-server kafka-clients tools clean terraform-test

all: build

# GOFLAGS above turns Go's own VCS stamp off, so the build passes the
# version (the nearest tag, if any) and the commit to `varve version` and
# varve_build_info itself; "-dirty" marks uncommitted changes.
OBS_PKG  := github.com/varve-io/varve/internal/obs
REVISION ?= $(shell r=$$(git rev-parse HEAD 2>/dev/null) && { git diff --quiet HEAD -- 2>/dev/null || r=$$r-dirty; echo $$r; })
VERSION  ?= $(shell git describe --tags --dirty 2>/dev/null)
LDFLAGS  := -X $(OBS_PKG).revision=$(REVISION) -X $(OBS_PKG).version=$(VERSION)

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/varve ./cmd/varve

tools: $(MINIO_STAMP) $(GEN_STAMP) $(BUF_STAMP) $(TFLINT_STAMP) $(NATS_STAMP) redis-server kafka-clients

# NATS JetStream and Redis Streams are the peers of `varve bench`.
$(NATS_STAMP):
	@mkdir -p $(TOOLBIN)
	GOBIN=$(TOOLBIN) $(GO) install github.com/nats-io/nats-server/v2@$(NATS_VERSION)
	@touch $@

redis-server:
	@command -v redis-server >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server)

# Third-party Kafka clients the kafka package's tests drive against the
# listener: kcat and confluent-kafka-python (both librdkafka), from Debian.
# The tests run Debian's /usr/bin/python3, which sees its dist-packages
# (a pyenv python3 first on PATH would not).
kafka-clients:
	@command -v kcat >/dev/null && /usr/bin/python3 -c 'import confluent_kafka' 2>/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y kcat python3-confluent-kafka)

$(TFLINT_STAMP):
	@mkdir -p $(TOOLBIN)
	GOBIN=$(TOOLBIN) $(GO) install github.com/terraform-linters/tflint@$(TFLINT_VERSION)
	@touch $@

$(MINIO_STAMP):
	@mkdir -p $(TOOLBIN)
	@echo ">> building MinIO $(MINIO_VERSION) from its Go module (first run only, a few minutes)"
	GOBIN=$(TOOLBIN) $(GO) install github.com/minio/minio@$(MINIO_VERSION)
	@touch $@

$(GEN_STAMP):
	@mkdir -p $(TOOLBIN)
	GOBIN=$(TOOLBIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(TOOLBIN) $(GO) install connectrpc.com/connect/cmd/protoc-gen-connect-go@$(CONNECT_GEN_VERSION)
	@touch $@

$(BUF_STAMP): tools/go.mod
	@mkdir -p $(TOOLBIN)
	cd tools && GOBIN=$(TOOLBIN) $(GO) install github.com/bufbuild/buf/cmd/buf
	@touch $@

GEN_TMP := $(TOOLS)/gen-tmp

# Generates into a scratch directory first, so builds running meanwhile never
# see gen/ half written.
gen-tmp: $(GEN_STAMP) $(BUF_STAMP)
	cd proto && buf lint
	rm -rf $(GEN_TMP) && mkdir -p $(GEN_TMP)
	buf generate -o $(GEN_TMP)

generate: gen-tmp
	rm -rf gen.old && mv gen gen.old && mv $(GEN_TMP)/gen gen && rm -rf gen.old

# Fails if the checked-in gen/ differs from what the pinned tools produce.
check-generated: gen-tmp
	@diff -r gen $(GEN_TMP)/gen >/dev/null || (diff -r gen $(GEN_TMP)/gen | head -20; echo "generated code is stale: run 'make generate' and commit gen/" >&2; exit 1)

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/'))" || (gofmt -l $$(git ls-files '*.go' | grep -v '^gen/'); echo "gofmt needed" >&2; exit 1)
	$(GO) vet ./...
	$(GO) run ./internal/lint/boundaries

# Every tier: unit, integration (real MinIO + embedded etcd) and end-to-end
# (the built binary). Nothing is skipped.
test: tools check-generated lint terraform-test
	VARVE_MINIO_BIN=$(TOOLBIN)/minio $(GO) test -count=1 -timeout 30m ./...
	VARVE_MINIO_BIN=$(TOOLBIN)/minio $(GO) test -count=1 -race -timeout 30m $(RACE_PKGS)

# The randomized history test with many kill -9 rounds (porcupine-checked):
# VARVE_SOAK_ROUNDS rounds, 100 by default; `make test` runs a short version.
soak: tools
	VARVE_MINIO_BIN=$(TOOLBIN)/minio VARVE_SOAK_ROUNDS=$${VARVE_SOAK_ROUNDS:-100} $(GO) test -count=1 -timeout 60m -run TestRandomizedHistory -v ./internal/e2e/

# Terraform modules (fmt, tflint offline, HCL checks) and the provider's
# acceptance tests against a real `varve dev` and the real terraform CLI.
terraform-test: $(TFLINT_STAMP)
	$(TERRAFORM) fmt -check -recursive terraform
	cd terraform && $(TOOLBIN)/tflint --recursive --config "$(CURDIR)/terraform/.tflint.hcl"
	@test -z "$$(gofmt -l terraform/provider)" || (gofmt -l terraform/provider; echo "gofmt needed" >&2; exit 1)
	cd terraform/provider && $(GO) vet ./...
	cd terraform/provider && TF_ACC_TERRAFORM_PATH="$$(command -v $(TERRAFORM))" $(GO) test -count=1 -timeout 10m ./...

# varve bench: Varve (fs, MinIO x1, x2), NATS JetStream, Redis Streams and
# the physical floor, in one run (~4 min).
bench: build tools
	VARVE_MINIO_BIN=$(TOOLBIN)/minio bin/varve bench --profile quick --out bench-out

# A quick run compared with the committed baseline by ratio to the floor.
bench-check: build tools
	VARVE_MINIO_BIN=$(TOOLBIN)/minio bin/varve bench --profile quick --quiet --out bench-out
	bin/varve bench check --baseline bench/results/quick/report.json --current bench-out/report.json

# Go benchmarks of every package (segment encode/decode, produce, fetch, scan).
bench-go:
	VARVE_MINIO_BIN=$(TOOLBIN)/minio $(GO) test -run '^$$' -bench . -benchmem -timeout 30m ./...

clean:
	rm -rf bin
