#!/usr/bin/env bash
# The full test suite (README's test command): a real Kafka broker for the
# Kafka tests, then every package with -race.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${FANAUDIT_KAFKA_BROKERS:-}" ] && [ -f scripts/kafka.sh ]; then
	# kafka.sh start prints shell assignments (FANAUDIT_KAFKA_BROKERS=…, FANAUDIT_KAFKA_DIR=…).
	eval "$(bash scripts/kafka.sh start)"
	export FANAUDIT_KAFKA_BROKERS FANAUDIT_KAFKA_DIR
	trap 'bash scripts/kafka.sh stop' EXIT
fi
go test -race -count=1 -timeout 40m ./...
