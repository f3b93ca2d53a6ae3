# fanaudit Makefile. Sections are owned by the part of the tree they build;
# keep each target's recipe in its own section.
GO      ?= go
PREFIX  ?= /usr/local
DESTDIR ?=
BIN     := bin/fanaudit
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: all build test test-unit lint fuzz bench install kafka-start kafka-stop clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/fanaudit

# The full suite: starts a real Kafka broker, runs every test with -race, stops the broker.
test:
	bash scripts/test.sh

# Tests without the broker (Kafka tests skip unless CI=true).
test-unit:
	$(GO) test -race -count=1 ./...
	cd bench && $(GO) test -race -count=1 ./...

# golangci-lint at a pinned version, through `go run` (nothing to install):
# depguard keeps x/sys/unix and unsafe in internal/kernel, errorlint keeps
# errors matched with errors.Is/As (.golangci.yml). The bench harness is its
# own module and is vetted from its own directory.
GOLANGCI_LINT_VERSION ?= v2.15.0
GOLANGCI_LINT := $(GO) run github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	@# By exit status, not output: on a cold module cache tidy prints
	@# "go: downloading" lines while it finds nothing to change.
	@$(GO) mod tidy -diff >/dev/null || ($(GO) mod tidy -diff; echo 'go mod tidy would change go.mod/go.sum'; exit 1)
	$(GO) vet ./...
	$(GO) vet -tags fanaudit_bench ./cmd/fanaudit
	$(GOLANGCI_LINT) run --allow-parallel-runners ./...
	cd bench && $(GO) vet ./... && $(GO) mod tidy -diff

# ---- capture (audit/, internal/kernel) ----
FUZZTIME ?= 60s
fuzz:
	$(GO) test ./internal/kernel -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME)
	$(GO) test ./internal/config -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME)

# ---- kafka (sinks/kafka, scripts/kafka.sh) ----
.PHONY: kafka-fetch test-kafka bench-kafka
# Resolve Apache Kafka's broker jars with mvn (cached in ~/.m2 and ~/.cache/fanaudit).
kafka-fetch:
	bash scripts/kafka.sh fetch
# Prints FANAUDIT_KAFKA_BROKERS=… and FANAUDIT_KAFKA_DIR=…; use: eval "$$(make -s kafka-start)"
kafka-start:
	@bash scripts/kafka.sh start
kafka-stop:
	bash scripts/kafka.sh stop
# The Kafka sink's tests against a broker of their own (CI=true: no skips).
test-kafka:
	@set -e; eval "$$(bash scripts/kafka.sh start)"; export FANAUDIT_KAFKA_BROKERS FANAUDIT_KAFKA_DIR; \
	trap 'bash scripts/kafka.sh stop --dir "$$FANAUDIT_KAFKA_DIR"' EXIT; \
	CI=true $(GO) test -race -count=1 -timeout 10m -v ./sinks/kafka/...
# Throughput and enqueue-to-ack latency against the real broker (acks=all, zstd).
bench-kafka:
	@set -e; eval "$$(bash scripts/kafka.sh start)"; export FANAUDIT_KAFKA_BROKERS FANAUDIT_KAFKA_DIR; \
	trap 'bash scripts/kafka.sh stop --dir "$$FANAUDIT_KAFKA_DIR"' EXIT; \
	$(GO) test -run '^$$' -bench BenchmarkSink -benchtime 200000x ./sinks/kafka/

# ---- records (internal/record, internal/ecs) ----
.PHONY: ecs-table
# Regenerate the committed ECS field table from the published ecs_flat.yml.
ECS_FLAT ?= ../shared/schemas/ecs_flat.yml
ecs-table:
	python3 scripts/ecs-table.py $(ECS_FLAT) > internal/ecs/testdata/ecs_fields.tsv.new
	mv internal/ecs/testdata/ecs_fields.tsv.new internal/ecs/testdata/ecs_fields.tsv

# ---- bench (bench/) ----
bench:
	bash bench/run.sh

# ---- deploy (deploy/) ----
install: build
	bash deploy/install.sh "$(DESTDIR)" "$(PREFIX)" "$(BIN)"

# Offline schema check of the Kubernetes manifest (its own Go module).
.PHONY: validate-k8s
validate-k8s:
	cd deploy/kubernetes/validate && $(GO) run . ../fanaudit.yaml

clean:
	rm -rf bin
