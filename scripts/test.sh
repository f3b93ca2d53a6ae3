#!/usr/bin/env bash
# The full test suite (README's test command): a real Kafka broker for the
# Kafka tests, then every package with -race.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${FANAUDIT_KAFKA_BROKERS:-}" ] && [ -f scripts/kafka.sh ]; then
	# kafka.sh start prints shell assignments (FANAUDIT_KAFKA_BROKERS=…, FANAUDIT_KAFKA_DIR=…).
	# A separate assignment so that a failed start stops the suite (set -e
	# does not see a failure inside eval "$(…)").
	kafka_env="$(bash scripts/kafka.sh start)"
	eval "$kafka_env"
	export FANAUDIT_KAFKA_BROKERS FANAUDIT_KAFKA_DIR
	trap 'bash scripts/kafka.sh stop --dir "$FANAUDIT_KAFKA_DIR"' EXIT
fi
go test -race -count=1 -timeout 40m ./...
# The benchmark harness is a module of its own (bench/go.mod); its smoke
# test keeps it working.
(cd bench && go test -race -count=1 -timeout 20m ./...)
