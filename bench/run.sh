#!/usr/bin/env bash
# make bench: the side-by-side benchmark (bench/cmd/fabench) on this
# machine, writing bench/RESULTS.md. Needs root (fanotify, tmpfs mounts) and
# a C compiler; installs Debian's fatrace if it is missing. Extra arguments
# go to fabench (e.g. -rounds 3 -n 50000 -o -).
set -euo pipefail
cd "$(dirname "$0")/.."
# The Kafka configuration needs the Kafka sink to exist and a real broker;
# start the local one only for a tree that has the sink, and stop it after.
if [ -z "${FANAUDIT_KAFKA_BROKERS:-}" ] && [ -f scripts/kafka.sh ] &&
	compgen -G 'sinks/kafka/*.go' >/dev/null && [ "${FABENCH_KAFKA:-1}" = 1 ]; then
	eval "$(bash scripts/kafka.sh start)"
	export FANAUDIT_KAFKA_BROKERS FANAUDIT_KAFKA_DIR
	trap 'bash scripts/kafka.sh stop --dir "$FANAUDIT_KAFKA_DIR"' EXIT
fi
(cd bench && go build -o .work/fabench ./cmd/fabench)
perf=()
# perf profiles show where fanaudit's CPU goes; Debian ships perf as linux-perf.
command -v perf >/dev/null 2>&1 && perf=(-perf-dir bench/.work/perf)
bench/.work/fabench -drain-hook "${perf[@]}" "$@"
