#!/usr/bin/env bash
# A real single-node Apache Kafka (KRaft, combined broker+controller) on
# 127.0.0.1 for fanaudit's Kafka tests and benchmarks.
#
#   kafka.sh fetch
#       Resolve the broker jars with mvn (cached in ~/.m2, copied once into
#       $FANAUDIT_KAFKA_CACHE, default ~/.cache/fanaudit/kafka-<version>).
#   kafka.sh start [--dir D] [--port P] [--controller-port C] [--no-auto-create]
#                  [--sasl-ssl-port S --tls-dir T --scram-user U --scram-password-file F]
#       Format D (a new temporary directory when omitted; reused as is when it
#       already holds a formatted log, which is how a crashed broker restarts
#       on its own data), start the broker, wait until it answers metadata
#       requests, and print shell assignments:
#         FANAUDIT_KAFKA_BROKERS=127.0.0.1:P
#         FANAUDIT_KAFKA_DIR=D
#       --no-auto-create sets auto.create.topics.enable=false (a missing
#       topic is then never created on a client's request).
#       With --sasl-ssl-port, a SASL_SSL listener is added (test use only:
#       the SCRAM password is passed to StorageTool on its command line). T must hold
#       ca.pem (the CA that client certificates must chain to: client
#       auth is required) and server.pem (unencrypted PKCS#8 key followed by
#       the certificate chain). U gets SCRAM-SHA-256 and SCRAM-SHA-512 credentials and a PLAIN
#       login with the password read from F.
#   kafka.sh stop [--dir D]
#       Stop the broker started on D (default: $FANAUDIT_KAFKA_DIR, else the
#       last one started without --dir) by its pid, and remove D unless
#       --keep is given.
#   kafka.sh kill --dir D
#       SIGKILL the broker on D and keep its data (crash tests).
#   kafka.sh fetch-tools
#       Resolve org.apache.kafka:kafka-tools at the broker's version with mvn
#       into $FANAUDIT_KAFKA_CACHE/tools-libs (for perf).
#   kafka.sh perf --brokers B --topic T --payload-file F [--num-records N]
#                 [--compression C] [--linger-ms L] [--batch-size S] [--throughput R]
#       Kafka's own producer benchmark, org.apache.kafka.tools.ProducerPerformance,
#       with acks=all and the given settings (defaults: 1500000 records, zstd,
#       linger.ms 20, batch.size 1048576, unthrottled). F holds one record
#       per line (fanaudit's real records). Prints its summary line.
set -euo pipefail

KAFKA_VERSION="${FANAUDIT_KAFKA_VERSION:-3.9.1}"
SCALA_VERSION=2.13
SLF4J_VERSION=1.7.36
CACHE="${FANAUDIT_KAFKA_CACHE:-$HOME/.cache/fanaudit/kafka-$KAFKA_VERSION}"
STATE="${TMPDIR:-/tmp}/fanaudit-kafka-last"

log() { echo "kafka.sh: $*" >&2; }
die() {
	log "$*"
	exit 1
}

# mvn_fetch POMDIR LIBS ARTIFACT WHAT resolves org.apache.kafka:ARTIFACT at
# the broker's version, with its runtime closure and an slf4j binding, into
# LIBS, once (LIBS/.complete marks a finished copy). The pom in POMDIR is a
# throwaway whose only purpose is to name that classpath, so mvn resolves
# the transitive closure into ~/.m2 for us.
mvn_fetch() {
	local pomdir=$1 libs=$2 artifact=$3 what=$4
	if [ -f "$libs/.complete" ]; then
		return 0
	fi
	command -v mvn >/dev/null || die "mvn not found (install maven and a JDK 17)"
	mkdir -p "$pomdir"
	cat >"$pomdir/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.fanaudit.test</groupId>
  <artifactId>${artifact}-classpath</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>${artifact}</artifactId>
      <version>${KAFKA_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-reload4j</artifactId>
      <version>${SLF4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
EOF
	rm -rf "$libs.tmp"
	log "fetching $what $KAFKA_VERSION with mvn (first run only)"
	if ! mvn -B -q -f "$pomdir/pom.xml" dependency:copy-dependencies \
		-DincludeScope=runtime -DoutputDirectory="$libs.tmp" >"$pomdir/mvn.log" 2>&1; then
		tail -n 30 "$pomdir/mvn.log" >&2
		die "mvn failed, log in $pomdir/mvn.log"
	fi
	touch "$libs.tmp/.complete"
	rm -rf "$libs"
	mv "$libs.tmp" "$libs"
}

fetch() { mvn_fetch "$CACHE" "$CACHE/libs" "kafka_${SCALA_VERSION}" "Apache Kafka jars"; }

fetch_tools() { mvn_fetch "$CACHE/tools" "$CACHE/tools-libs" kafka-tools kafka-tools; }

perf() {
	local brokers="" topic="" payload="" n=1500000 comp=zstd linger=20 bsize=1048576 rate=-1
	while [ $# -gt 0 ]; do
		case "$1" in
		--brokers) brokers="$2"; shift 2 ;;
		--topic) topic="$2"; shift 2 ;;
		--payload-file) payload="$2"; shift 2 ;;
		--num-records) n="$2"; shift 2 ;;
		--compression) comp="$2"; shift 2 ;;
		--linger-ms) linger="$2"; shift 2 ;;
		--batch-size) bsize="$2"; shift 2 ;;
		--throughput) rate="$2"; shift 2 ;;
		*) die "perf: unknown argument $1" ;;
		esac
	done
	[ -n "$brokers" ] && [ -n "$topic" ] && [ -f "$payload" ] || die "perf: --brokers, --topic and --payload-file are required"
	fetch_tools
	command -v java >/dev/null || die "java not found (install a JDK 17)"
	local l4j
	l4j="$(mktemp)"
	echo "log4j.rootLogger=WARN" >"$l4j"
	java -Xms256m -Xmx1g -Dlog4j.configuration="file:$l4j" -cp "$CACHE/tools-libs/*" \
		org.apache.kafka.tools.ProducerPerformance --topic "$topic" --num-records "$n" \
		--payload-file "$payload" --payload-delimiter $'\n' --throughput "$rate" \
		--producer-props bootstrap.servers="$brokers" acks=all compression.type="$comp" \
		linger.ms="$linger" batch.size="$bsize" buffer.memory=268435456
	rm -f "$l4j"
}

free_port() {
	local p
	for _ in $(seq 1 200); do
		p=$((20000 + RANDOM % 30000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	die "no free port found"
}

# java_cmd execs, so the caller's pid is the JVM's pid.
java_cmd() {
	# shellcheck disable=SC2206
	local heap=(${FANAUDIT_KAFKA_HEAP:--Xms256m -Xmx512m})
	exec java "${heap[@]}" -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto \
		-Djava.awt.headless=true -Dlog4j.configuration="file:$1/log4j.properties" \
		-cp "$CACHE/libs/*" "${@:2}"
}

start() {
	local dir="" port="" cport="" sport="" tls="" user="" pwfile="" tmpdir=0 autocreate=true
	while [ $# -gt 0 ]; do
		case "$1" in
		--dir) dir="$2"; shift 2 ;;
		--port) port="$2"; shift 2 ;;
		--controller-port) cport="$2"; shift 2 ;;
		--no-auto-create) autocreate=false; shift ;;
		--sasl-ssl-port) sport="$2"; shift 2 ;;
		--tls-dir) tls="$2"; shift 2 ;;
		--scram-user) user="$2"; shift 2 ;;
		--scram-password-file) pwfile="$2"; shift 2 ;;
		*) die "start: unknown argument $1" ;;
		esac
	done
	fetch
	command -v java >/dev/null || die "java not found (install a JDK 17)"
	if [ -z "$dir" ]; then
		dir="$(mktemp -d "${TMPDIR:-/tmp}/fanaudit-kafka.XXXXXX")"
		tmpdir=1
	fi
	mkdir -p "$dir"
	dir="$(cd "$dir" && pwd)"
	if [ -f "$dir/broker.pid" ] && kill -0 "$(cat "$dir/broker.pid")" 2>/dev/null; then
		die "a broker is already running on $dir (pid $(cat "$dir/broker.pid"))"
	fi
	local restart=0
	if [ -f "$dir/server.properties" ] && [ -f "$dir/data/meta.properties" ]; then
		restart=1
		# Same listeners as before, so clients reconnect to the same address.
		port="$(sed -n 's/^# port=//p' "$dir/server.properties")"
	else
		[ -n "$port" ] || port="$(free_port)"
		[ -n "$cport" ] || cport="$(free_port)"
		local listeners="PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport"
		local protomap="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
		if [ -n "$sport" ]; then
			[ -f "$tls/ca.pem" ] && [ -f "$tls/server.pem" ] || die "start: --tls-dir must hold ca.pem and server.pem"
			[ -n "$user" ] && [ -f "$pwfile" ] || die "start: --sasl-ssl-port needs --scram-user and --scram-password-file"
			listeners="$listeners,SASL_SSL://127.0.0.1:$sport"
			protomap="$protomap,SASL_SSL:SASL_SSL"
		fi
		cat >"$dir/server.properties" <<EOF
# port=$port
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=$listeners
advertised.listeners=${listeners/,CONTROLLER:\/\/127.0.0.1:$cport/}
listener.security.protocol.map=$protomap
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=$autocreate
log.flush.interval.messages=9223372036854775807
# A restarted node registers a new incarnation only once the old one's
# session expired; the 9 s default makes every crash test 9 s slower.
broker.session.timeout.ms=2000
broker.heartbeat.interval.ms=500
EOF
		if [ -n "$sport" ]; then
			local pw
			pw="$(cat "$pwfile")"
			cat >>"$dir/server.properties" <<EOF
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$tls/server.pem
listener.name.sasl_ssl.ssl.truststore.type=PEM
listener.name.sasl_ssl.ssl.truststore.location=$tls/ca.pem
listener.name.sasl_ssl.ssl.client.auth=required
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$user="$pw";
EOF
			chmod 600 "$dir/server.properties"
		fi
		cat >"$dir/log4j.properties" <<EOF
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=$dir/server.log
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
EOF
	fi
	if [ "$restart" = 0 ]; then
		local uuid
		uuid="$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
		# --cluster-id=: an id starting with "-" must not read as an option.
		local fmt=(kafka.tools.StorageTool format "--cluster-id=$uuid" -c "$dir/server.properties")
		if [ -n "$sport" ]; then
			local pw
			pw="$(cat "$pwfile")"
			fmt+=(--add-scram "SCRAM-SHA-256=[name=$user,password=$pw]" --add-scram "SCRAM-SHA-512=[name=$user,password=$pw]")
		fi
		(java_cmd "$dir" "${fmt[@]}") >"$dir/format.log" 2>&1 || {
			cat "$dir/format.log" >&2
			die "formatting $dir failed"
		}
	fi
	# setsid: the broker must not share the caller's process group, so a
	# test harness's signals do not reach it and only "stop" ends it.
	CACHE="$CACHE" setsid bash -c "$(declare -f java_cmd); java_cmd \"\$@\"" _ "$dir" kafka.Kafka "$dir/server.properties" \
		>"$dir/stdout.log" 2>&1 </dev/null &
	local pid=$!
	echo "$pid" >"$dir/broker.pid"
	# Remembered for a bare "stop"; brokers on an explicit --dir are not.
	if [ "$tmpdir" = 1 ]; then
		echo "$dir" >"$STATE"
	fi
	local deadline=$((SECONDS + ${FANAUDIT_KAFKA_START_TIMEOUT:-90}))
	until kcat -b "127.0.0.1:$port" -L -m 2 >/dev/null 2>&1; do
		if ! kill -0 "$pid" 2>/dev/null; then
			tail -n 40 "$dir/stdout.log" "$dir/server.log" >&2 || true
			die "broker exited during start, see $dir/server.log"
		fi
		[ $SECONDS -lt $deadline ] || {
			kill -9 "$pid" 2>/dev/null || true
			die "broker on 127.0.0.1:$port not ready after ${FANAUDIT_KAFKA_START_TIMEOUT:-90}s"
		}
		sleep 0.2
	done
	log "broker pid $pid ready on 127.0.0.1:$port (data in $dir)"
	echo "FANAUDIT_KAFKA_BROKERS=127.0.0.1:$port"
	echo "FANAUDIT_KAFKA_DIR=$dir"
}

stop() {
	local dir="" keep=0 sig=TERM
	while [ $# -gt 0 ]; do
		case "$1" in
		--dir) dir="$2"; shift 2 ;;
		--keep) keep=1; shift ;;
		--kill) sig=KILL; keep=1; shift ;;
		*) die "stop: unknown argument $1" ;;
		esac
	done
	[ -n "$dir" ] || dir="${FANAUDIT_KAFKA_DIR:-}"
	[ -n "$dir" ] || dir="$(cat "$STATE" 2>/dev/null || true)"
	[ -n "$dir" ] && [ -d "$dir" ] || die "stop: no broker directory"
	if [ -f "$dir/broker.pid" ]; then
		local pid
		pid="$(cat "$dir/broker.pid")"
		if kill -0 "$pid" 2>/dev/null; then
			kill "-$sig" "$pid" 2>/dev/null || true
			local deadline=$((SECONDS + 30))
			while kill -0 "$pid" 2>/dev/null; do
				if [ $SECONDS -ge $deadline ]; then
					kill -9 "$pid" 2>/dev/null || true
				fi
				sleep 0.1
			done
		fi
		rm -f "$dir/broker.pid"
	fi
	if [ "$keep" = 0 ]; then
		rm -rf "$dir"
		[ "$(cat "$STATE" 2>/dev/null || true)" != "$dir" ] || rm -f "$STATE"
	fi
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
fetch) fetch ;;
fetch-tools) fetch_tools ;;
perf) perf "$@" ;;
start) start "$@" ;;
stop) stop "$@" ;;
kill) stop --kill "$@" ;;
*) die "usage: kafka.sh fetch | start [--dir D] [--port P] … | stop [--dir D] [--keep] | kill --dir D | fetch-tools | perf --brokers B --topic T --payload-file F …" ;;
esac
