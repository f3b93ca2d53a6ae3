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

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...

# ---- capture (audit/, internal/kernel) ----
FUZZTIME ?= 60s
fuzz:
	$(GO) test ./internal/kernel -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME)

# ---- kafka (sinks/kafka, scripts/kafka.sh) ----
kafka-start:
	bash scripts/kafka.sh start
kafka-stop:
	bash scripts/kafka.sh stop

# ---- bench (bench/) ----
bench:
	bash bench/run.sh

# ---- deploy (deploy/) ----
install: build
	bash deploy/install.sh "$(DESTDIR)" "$(PREFIX)" "$(BIN)"

clean:
	rm -rf bin
