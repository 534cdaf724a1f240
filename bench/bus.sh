#!/bin/sh
# bench/bus.sh — the message bus benchmark: durable agent-to-agent throughput and latency of
# dreamos, beside Redis pub/sub and a raw loopback echo, in one run, printed as one table.
#
# Usage: bench/bus.sh            (no arguments; settings from the environment, below)
#
# What runs (256-byte bodies everywhere, "8 clients" = 8 senders into 1 receiver):
#   dreamos (durable)  a headless dreamos on a fresh runtime per run (bus.window 1000,
#                      store.durability normal, heartbeats off); agents started with
#                      `dreamos ctl agent spawn`: bus-consumer (acks every message) and 1 or
#                      8 bus-producer agents sending `send` to it, each with at most 1000
#                      `send`s waiting for their `sent` (i.e. for the commit).  msgs/s =
#                      messages / (first producer start .. last message read by the consumer).
#   redis pub/sub      our own redis-server (Debian package; --save '' --appendonly no) on a
#                      free loopback port; bench/redis-bench.c: 1 or 8 publisher processes
#                      doing PUBLISH pipelined with at most 1000 replies outstanding, 1
#                      subscriber counting messages (same clock as above).
#   echo (floor)       bench/echo.c: a one-process poll(2) TCP echo server on loopback,
#                      1 or 8 clients each with a window of 1000 messages, written in
#                      batches as the other senders do (bytes only: no framing, no parsing,
#                      so its msgs/s is the transport's ceiling, not a peer).
#   store floor        bench/store-floor.c: SQLite alone on one thread, no protocol, the
#                      same message count in transactions as large as dreamos's group
#                      commits were: one bare row per message, then dreamos's own writes
#                      (a copy of its database; a block of messages per transaction,
#                      packed as src/core/packtab.h says, and the acked-through mark).
#                      The bare rows are the most a bus storing a row per message could
#                      reach here.
# Latency: one sender at a fixed BUS_RATE msgs/s for BUS_LAT_SECS s with the CLOCK_MONOTONIC
# send time in the body; dreamos and Redis: one-way (sender -> the receiver reads it), echo:
# the round trip (send -> echo read back).  Throughput: median of BUS_REPEAT runs.
#
# CPU per message (printed after the targets), for the throughput runs of dreamos and Redis:
# CPU time over the run / messages, in us; each figure is the median of its own over the
# BUS_REPEAT runs, so the parts need not add up to the total exactly.
#   dreamos  its threads, from /proc/PID/task/*/schedstat (ns on CPU; exact, unlike the 10 ms
#            ticks of /proc/PID/stat), sampled when the producers are released and as soon as
#            the consumer's result file appears (polled every 20 ms; dreamos is idle by
#            then): loop (the main thread), store (dreamos-store), ckpt (dreamos-ckpt), other
#            (the rest); agents = the consumer's and the producers' own CPU over their
#            measured intervals (cpu_ns= in their result lines, CLOCK_PROCESS_CPUTIME_ID).
#   redis    redis-server's threads (schedstat, before and after each redis-bench run) and
#            the clients (client_cpu_ns= of redis-bench: the subscriber's and the
#            publishers' own CPU over their measured intervals).
# "CPUs busy" = CPU us per message x msgs/s / 1e6 of a run: how many of the machine's CPUs
# the system kept busy (in parentheses: the loop thread's, redis-server's share).  A figure
# that cannot be read (no schedstat, say) is "n/a".
#
# Targets (from the issue): dreamos msgs/s >= Redis pub/sub msgs/s with the same number of
# clients; dreamos p50 <= 3 x the echo round trip p50.  They are reported, not enforced: the
# exit status is 0 when every measurement ran, 1 when one failed.
#
# Environment:
#   DREAMOS        dreamos binary (default: build an optimised one, -O2, in the scratch dir;
#                  _build is usually --enable-debug -O0, which would measure the debug build)
#   CC             C compiler (default cc)
#   BUS_MSGS       messages per dreamos throughput run (default 100000)
#   BUS_PEER_MSGS  messages per Redis throughput run (default 1000000)
#   BUS_ECHO_MSGS  messages per echo throughput run (default 5000000)
#   BUS_CLIENTS    the "many clients" count (default 8)
#   BUS_WINDOW     sender window and bus.window (default 1000)
#   BUS_RATE       latency runs: messages per second (default 1000)
#   BUS_LAT_SECS   latency runs: seconds (default 5)
#   BUS_REPEAT     throughput runs per cell, the median is shown (default 3)
#   BUS_DURABILITY store.durability for dreamos: normal (default) or strict
#   BUS_HOLD       dreamos's consumer acks out of order: the ack of every message whose id
#                  is a multiple of BUS_HOLD waits for its next read (bus-consumer --hold);
#                  0 (default): every ack at once, in order
#   BUS_TMP        scratch directory, kept (default: a new /tmp/dreamos-bus.XXXXXX, removed)
# Needs: a C compiler, redis-server and redis-cli (apt-get install redis-server); without
# them the Redis row says "n/a".
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
CC=${CC:-cc}
MSGS=${BUS_MSGS:-100000}
PEER_MSGS=${BUS_PEER_MSGS:-1000000}
ECHO_MSGS=${BUS_ECHO_MSGS:-5000000}
CLIENTS=${BUS_CLIENTS:-8}
WINDOW=${BUS_WINDOW:-1000}
RATE=${BUS_RATE:-1000}
LAT_SECS=${BUS_LAT_SECS:-5}
REPEAT=${BUS_REPEAT:-3}
DURABILITY=${BUS_DURABILITY:-normal}
HOLD=${BUS_HOLD:-0}
SIZE=256
LAT_N=$(awk -v r="$RATE" -v s="$LAT_SECS" 'BEGIN { printf "%d", r * s }')

if [ -n "${BUS_TMP:-}" ]; then
	tmp=$BUS_TMP
	mkdir -p "$tmp"
else
	tmp=$(mktemp -d /tmp/dreamos-bus.XXXXXX)
fi
DPID="" RPID=""
cleanup() {
	# Only the processes this script started, by pid.
	if [ -n "$DPID" ]; then kill -TERM "$DPID" 2>/dev/null || true; fi
	if [ -n "$RPID" ]; then kill -TERM "$RPID" 2>/dev/null || true; fi
	if [ -z "${BUS_TMP:-}" ]; then rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { echo "bus: $*" >&2; }
die() { say "$*"; exit 1; }
now() { date +%s.%N; }

# ---- build ----------------------------------------------------------------------------
say "building the benchmark programs ($CC -O2) in $tmp"
for p in bus-producer bus-consumer redis-bench echo; do
	"$CC" -O2 -Wall -o "$tmp/$p" "$here/$p.c" || die "cannot build $p"
done
"$CC" -O2 -Wall -I"$top/src/core" -o "$tmp/store-floor" "$here/store-floor.c" \
	"$top/src/core/packtab.c" -lsqlite3 -lm ||
	die "cannot build store-floor (libsqlite3-dev)"
if [ -n "${DREAMOS:-}" ]; then
	say "using DREAMOS=$DREAMOS"
	cp "$DREAMOS" "$tmp/dreamos"
else
	say "building an optimised dreamos in $tmp/build (configure; make dreamos)"
	[ -x "$top/configure" ] || die "$top/configure is missing: run ./bootstrap, or set DREAMOS"
	mkdir -p "$tmp/build"
	if ! (cd "$tmp/build" && "$top/configure" --quiet >configure.log 2>&1 &&
		make -j"$(nproc 2>/dev/null || echo 2)" dreamos >make.log 2>&1); then
		tail -n 20 "$tmp/build/make.log" "$tmp/build/configure.log" >&2 2>/dev/null || true
		die "the dreamos build failed"
	fi
	cp "$tmp/build/dreamos" "$tmp/dreamos"
fi
D=$tmp/dreamos

# kv FILE KEY: the value of KEY=... in a result line.
kv() { tr ' ' '\n' <"$1" | sed -n "s/^$2=//p" | head -n 1; }
# median of the numbers on stdin; spread: "min..max" of them
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "n/a" }'; }
spread() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[1] ".." v[NR]; else print "n/a" }'; }

# wait_files SECONDS FILE...: until every FILE exists.
wait_files() {
	wf_end=$(($(date +%s) + $1))
	shift
	for f in "$@"; do
		while [ ! -f "$f" ]; do
			if [ -n "$DPID" ] && ! kill -0 "$DPID" 2>/dev/null; then
				say "dreamos exited; its log:"
				tail -n 20 "$RUN/dreamos.err" >&2
				return 1
			fi
			[ "$(date +%s)" -le "$wf_end" ] || { say "timed out waiting for $f"; return 1; }
			sleep 0.02
		done
	done
}

# threads_cpu PID FILE: one line per thread of PID into FILE, "TID NAME NS": NS its time on
# CPU, the first field of /proc/PID/task/TID/schedstat (ns, exact; /proc/PID/stat counts 10 ms
# ticks), NAME its comm.  FILE is left empty when they cannot be read.
threads_cpu() {
	grep -sH '' "/proc/$1/task/"*/comm "/proc/$1/task/"*/schedstat 2>/dev/null |
		awk -F: '{ n = split($1, p, "/"); t = p[n - 1]; v = substr($0, length($1) + 2)
			if (p[n] == "comm") { gsub(/[ \t]/, "_", v); name[t] = v }
			else if (split(v, f, " ") >= 1 && f[1] ~ /^[0-9]+$/) ns[t] = f[1] }
			END { for (t in ns) print t, (t in name ? name[t] : "?"), ns[t] }' >"$2" || :
}
# cpu_delta PID BEFORE AFTER: the CPU time (ns) of PID's threads between two threads_cpu
# samples: "LOOP STORE CKPT OTHER ALL", LOOP the main thread's (dreamos's loop, "dreamos"),
# STORE and CKPT the threads named dreamos-store and dreamos-ckpt, OTHER the rest; "n/a n/a
# n/a n/a n/a" when a sample is empty.  A thread started in between counts from 0; one that
# ended in between is not counted (dreamos's threads live as long as it does).
cpu_delta() {
	awk -v pid="$1" 'FILENAME == ARGV[1] { b[$1] = $3; nb++; next }
		{ d = $3 - (($1 in b) ? b[$1] : 0); na++
		  k = $1 == pid ? "loop" : $2 == "dreamos-store" ? "store" : $2 == "dreamos-ckpt" ? "ckpt" : "other"
		  s[k] += d; all += d }
		END { if (!nb || !na) { print "n/a n/a n/a n/a n/a"; exit }
		  printf "%.0f %.0f %.0f %.0f %.0f\n", s["loop"], s["store"], s["ckpt"], s["other"], all }' "$2" "$3"
}
# sum_field KEY FILE...: the sum of KEY=... over result files; n/a if one lacks it.
sum_field() {
	sf_key=$1
	shift
	for f in "$@"; do
		v=$(kv "$f" "$sf_key")
		echo "${v:-n/a}"
	done | awk '$1 !~ /^[0-9]+$/ { bad = 1 } { s += $1 } END { if (bad || !NR) print "n/a"; else printf "%.0f\n", s }'
}

# ---- dreamos ----------------------------------------------------------------------------
# dreamos_run TAG PRODUCERS COUNT_EACH RATE: one run on a fresh runtime; sets LINE to the
# result line of the consumer plus t0 (first producer start), the producers' `sent`
# figures and, with RATE 0, the CPU time of the measured interval in ns: dreamos's threads
# (cpu_loop/store/ckpt/other_ns, from the go to the consumer's result file) and the agents'
# own (cpu_agents_ns: the consumer's cpu_ns plus the producers').  Runs in this shell (not in
# $(...)), so that DPID is known to cleanup.
dreamos_run() {
	RUN=$tmp/$1
	np=$2 each=$3 rate=$4
	total=$((np * each))
	rm -rf "$RUN"
	mkdir -p "$RUN"
	cat >"$RUN/dreamos.yaml" <<EOF
bridge:
  enabled: false
extensions:
  load: []
agents:
  heartbeat_timeout: 0
  restart: never
bus:
  window: $WINDOW
store:
  durability: $DURABILITY
EOF
	"$D" --headless --runtime "$RUN/rt" --config "$RUN/dreamos.yaml" --log-level warn \
		</dev/null >"$RUN/dreamos.out" 2>"$RUN/dreamos.err" &
	DPID=$!
	i=0
	until [ -S "$RUN/rt/dreamos.sock" ] && "$D" ctl --runtime "$RUN/rt" status >/dev/null 2>&1; do
		i=$((i + 1))
		[ $i -lt 200 ] && kill -0 "$DPID" 2>/dev/null || { cat "$RUN/dreamos.err" >&2; die "dreamos did not start"; }
		sleep 0.05
	done
	"$D" ctl --runtime "$RUN/rt" agent spawn consumer --cap bench -- \
		"$tmp/bus-consumer" --count "$total" --hold "$HOLD" --out "$RUN/consumer" >/dev/null
	wait_files 10 "$RUN/consumer.ready" || return 1
	ready="" results=""
	i=1
	while [ $i -le "$np" ]; do
		if [ "$rate" = 0 ]; then mode="--window $WINDOW"; else mode="--rate $rate"; fi
		# shellcheck disable=SC2086
		"$D" ctl --runtime "$RUN/rt" agent spawn "p$i" --cap bench -- "$tmp/bus-producer" \
			--to consumer --count "$each" $mode --size $SIZE --go "$RUN/go" \
			--out "$RUN/p$i" >/dev/null
		ready="$ready $RUN/p$i.ready"
		results="$results $RUN/p$i"
		i=$((i + 1))
	done
	# shellcheck disable=SC2086
	wait_files 10 $ready || return 1
	dcpu="n/a n/a n/a n/a n/a"
	if [ "$rate" = 0 ]; then
		threads_cpu "$DPID" "$RUN/cpu.0"
		: >"$RUN/go"
		# dreamos's CPU as soon as the consumer has read the last message.  A producer
		# whose sends were refused ends without it: that is reported below.
		wc=0
		while [ ! -f "$RUN/consumer" ]; do
			wc=$((wc + 1))
			kill -0 "$DPID" 2>/dev/null || break
			# shellcheck disable=SC2086
			if [ $((wc % 25)) = 0 ] && grep -qs ' errors=[1-9]' $results; then break; fi
			[ $wc -lt 15000 ] || break
			sleep 0.02
		done
		threads_cpu "$DPID" "$RUN/cpu.1"
		dcpu=$(cpu_delta "$DPID" "$RUN/cpu.0" "$RUN/cpu.1")
	else
		: >"$RUN/go"
	fi
	# shellcheck disable=SC2086
	wait_files 300 $results || return 1
	# shellcheck disable=SC2086
	errs=$(for f in $results; do kv "$f" errors; done | awk '{ s += $1 } END { print s + 0 }')
	[ "$errs" = 0 ] || { say "$1: $errs sends were refused (see $RUN/dreamos.err)"; return 1; }
	wait_files 300 "$RUN/consumer" || return 1
	"$D" ctl --runtime "$RUN/rt" status --json >"$RUN/status.json" 2>/dev/null || true
	"$D" ctl --runtime "$RUN/rt" quit >/dev/null 2>&1 || true
	i=0
	while kill -0 "$DPID" 2>/dev/null && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
	kill -KILL "$DPID" 2>/dev/null || true
	wait "$DPID" 2>/dev/null || true
	DPID=""
	# shellcheck disable=SC2086
	t0=$(for f in $results; do kv "$f" start_ns; done | sort -n | head -n 1)
	# shellcheck disable=SC2086
	retries=$(for f in $results; do kv "$f" retries; done | awk '{ s += $1 } END { print s + 0 }')
	commits=$(sed -n 's/.*"commits": *\([0-9]*\).*/\1/p' "$RUN/status.json" | head -n 1)
	LINE="$(cat "$RUN/consumer") t0=$t0 sent_p50_us=$(kv "$RUN/p1" sent_p50_us)"
	LINE="$LINE sent_p99_us=$(kv "$RUN/p1" sent_p99_us) commits=${commits:-?} retries=$retries"
	# shellcheck disable=SC2086
	agents=$(sum_field cpu_ns "$RUN/consumer" $results)
	# shellcheck disable=SC2086
	set -- $dcpu
	LINE="$LINE cpu_loop_ns=$1 cpu_store_ns=$2 cpu_ckpt_ns=$3 cpu_other_ns=$4 cpu_agents_ns=$agents"
}
# thr_of LINE TOTAL: msgs/s of a dreamos result line.
thr_of() {
	echo "$1" | tr ' ' '\n' | awk -F= -v n="$2" '{ v[$1] = $2 }
		END { printf "%.0f\n", n / ((v["last_ns"] - v["t0"]) / 1e9) }'
}
field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1; }
# dcpu_row LINE TOTAL MSGS_PER_S: the CPU of a dreamos throughput run per message, in us:
# "ALL LOOP STORE CKPT OTHER AGENTS BUSY LOOP_BUSY", BUSY = CPUs kept busy (ALL x msgs/s /
# 1e6), LOOP_BUSY the loop thread's; n/a for what could not be read.
dcpu_row() {
	echo "$1" | tr ' ' '\n' | awk -F= -v n="$2" -v r="$3" '{ v[$1] = $2 }
		function ok(k) { return (k in v) && v[k] ~ /^-?[0-9]+$/ }
		function us(k) { return ok(k) ? sprintf("%.4f", v[k] / 1e3 / n) : "n/a" }
		function busy(x) { return x == "n/a" || r !~ /^[0-9]+$/ ? "n/a" : sprintf("%.4f", x * r / 1e6) }
		END {
			all = "n/a"
			if (ok("cpu_loop_ns") && ok("cpu_store_ns") && ok("cpu_ckpt_ns") && ok("cpu_other_ns") && ok("cpu_agents_ns"))
				all = sprintf("%.4f", (v["cpu_loop_ns"] + v["cpu_store_ns"] + v["cpu_ckpt_ns"] + v["cpu_other_ns"] + v["cpu_agents_ns"]) / 1e3 / n)
			print all, us("cpu_loop_ns"), us("cpu_store_ns"), us("cpu_ckpt_ns"), us("cpu_other_ns"), us("cpu_agents_ns"), busy(all), busy(us("cpu_loop_ns"))
		}'
}
# rcpu_row OUT BEFORE AFTER: the same for a redis-bench throughput run (its output line OUT,
# redis-server's threads_cpu samples around it): "ALL SERVER CLIENTS BUSY SERVER_BUSY".
rcpu_row() {
	srv=$(cpu_delta "$RPID" "$2" "$3" | cut -d' ' -f5)
	echo "$1 server_ns=$srv" | tr ' ' '\n' | awk -F= '{ v[$1] = $2 }
		function ok(k) { return (k in v) && v[k] ~ /^-?[0-9]+$/ }
		function us(k) { return ok(k) ? sprintf("%.4f", v[k] / 1e3 / v["msgs"]) : "n/a" }
		function busy(x) { return x == "n/a" ? "n/a" : sprintf("%.4f", x * v["msgs_per_s"] / 1e6) }
		END {
			all = ok("server_ns") && ok("client_cpu_ns") ? sprintf("%.4f", (v["server_ns"] + v["client_cpu_ns"]) / 1e3 / v["msgs"]) : "n/a"
			print all, us("server_ns"), us("client_cpu_ns"), busy(all), busy(us("server_ns"))
		}'
}
# col N FILE: the median of column N of FILE, leaving out n/a (n/a if none).
col() { awk -v c="$1" '$c != "n/a" { print $c }' "$2" | median; }

EACH8=$((MSGS / CLIENTS))
DNOTE=""
t_start=$(now)
load_start=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')

say "dreamos: throughput, 1 producer -> 1 consumer, $MSGS messages x $REPEAT"
k=0
: >"$tmp/d1"
: >"$tmp/dc1"
while [ $k -lt "$REPEAT" ]; do
	k=$((k + 1))
	dreamos_run d1-$k 1 "$MSGS" 0 || die "dreamos run failed"
	line=$LINE
	thr_of "$line" "$MSGS" >>"$tmp/d1"
	dcpu_row "$line" "$MSGS" "$(tail -n 1 "$tmp/d1")" >>"$tmp/dc1"
	say "  run $k: $(tail -n 1 "$tmp/d1") msgs/s ($(field "$line" commits) commits; sent p50 $(field "$line" sent_p50_us) us)"
done
D1=$(median <"$tmp/d1") D1S=$(spread <"$tmp/d1")
# The store floor writes in transactions as large as this run's group commits.
C1=$(field "$line" commits)
case $C1 in '' | *[!0-9]* | 0) C1=1 ;; esac
FLOOR_BATCH=$((MSGS / C1 > 0 ? MSGS / C1 : 1))
cp "$RUN/rt/dreamos.db" "$tmp/floor-dreamos.db" || die "no dreamos.db in $RUN/rt"
rm -f "$tmp/floor-dreamos.db-wal"
if [ -f "$RUN/rt/dreamos.db-wal" ]; then cp "$RUN/rt/dreamos.db-wal" "$tmp/floor-dreamos.db-wal"; fi

say "dreamos: throughput, $CLIENTS producers -> 1 consumer, $((EACH8 * CLIENTS)) messages x $REPEAT"
k=0
: >"$tmp/d8"
: >"$tmp/dc8"
while [ $k -lt "$REPEAT" ]; do
	k=$((k + 1))
	dreamos_run d8-$k "$CLIENTS" "$EACH8" 0 || die "dreamos run failed"
	line=$LINE
	thr_of "$line" $((EACH8 * CLIENTS)) >>"$tmp/d8"
	dcpu_row "$line" $((EACH8 * CLIENTS)) "$(tail -n 1 "$tmp/d8")" >>"$tmp/dc8"
	say "  run $k: $(tail -n 1 "$tmp/d8") msgs/s ($(field "$line" commits) commits)"
done
D8=$(median <"$tmp/d8") D8S=$(spread <"$tmp/d8")

say "dreamos: latency, 1 producer at $RATE msgs/s for $LAT_SECS s"
dreamos_run dlat 1 "$LAT_N" "$RATE" || die "dreamos run failed"
line=$LINE
DLAT50=$(field "$line" lat_p50_us) DLAT99=$(field "$line" lat_p99_us)
DNOTE="send -> sent (durable) p50 $(field "$line" sent_p50_us) us, p99 $(field "$line" sent_p99_us) us"

# ---- redis ----------------------------------------------------------------------------
RLAT50=n/a RLAT99=n/a R1=n/a R8=n/a R1S=n/a R8S=n/a
: >"$tmp/rc1"
: >"$tmp/rc8"
if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
	port=$("$tmp/echo" free-port)
	mkdir -p "$tmp/redis"
	# No persistence; no output-buffer limit for the subscriber (the default 32 MB limit
	# would disconnect it under 8 pipelined publishers: Redis has no flow control there).
	redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
		--dir "$tmp/redis" --logfile "$tmp/redis/redis.log" --daemonize no \
		--client-output-buffer-limit 'pubsub 0 0 0' >/dev/null 2>&1 &
	RPID=$!
	i=0
	until redis-cli -p "$port" ping >/dev/null 2>&1; do
		i=$((i + 1))
		[ $i -lt 100 ] && kill -0 "$RPID" 2>/dev/null || die "redis-server did not start"
		sleep 0.05
	done
	say "redis $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/') on port $port: throughput 1 and $CLIENTS publishers, $PEER_MSGS messages x $REPEAT"
	: >"$tmp/r1"
	: >"$tmp/r8"
	k=0
	while [ $k -lt "$REPEAT" ]; do
		k=$((k + 1))
		threads_cpu "$RPID" "$tmp/redis/cpu.0"
		out=$("$tmp/redis-bench" "$port" thr 1 "$PEER_MSGS" "$WINDOW" $SIZE) || die "redis-bench failed"
		threads_cpu "$RPID" "$tmp/redis/cpu.1"
		field "$out" msgs_per_s >>"$tmp/r1"
		rcpu_row "$out" "$tmp/redis/cpu.0" "$tmp/redis/cpu.1" >>"$tmp/rc1"
		threads_cpu "$RPID" "$tmp/redis/cpu.0"
		out=$("$tmp/redis-bench" "$port" thr "$CLIENTS" $((PEER_MSGS / CLIENTS)) "$WINDOW" $SIZE) || die "redis-bench failed"
		threads_cpu "$RPID" "$tmp/redis/cpu.1"
		field "$out" msgs_per_s >>"$tmp/r8"
		rcpu_row "$out" "$tmp/redis/cpu.0" "$tmp/redis/cpu.1" >>"$tmp/rc8"
		say "  run $k: $(tail -n 1 "$tmp/r1") / $(tail -n 1 "$tmp/r8") msgs/s"
	done
	R1=$(median <"$tmp/r1") R1S=$(spread <"$tmp/r1")
	R8=$(median <"$tmp/r8") R8S=$(spread <"$tmp/r8")
	say "redis: latency, 1 publisher at $RATE msgs/s for $LAT_SECS s"
	out=$("$tmp/redis-bench" "$port" lat "$RATE" "$LAT_N" $SIZE) || die "redis-bench failed"
	RLAT50=$(field "$out" lat_p50_us) RLAT99=$(field "$out" lat_p99_us)
	redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || kill -TERM "$RPID" 2>/dev/null || true
	wait "$RPID" 2>/dev/null || true
	RPID=""
else
	say "redis-server or redis-cli not found (apt-get install redis-server): Redis row skipped"
fi

# ---- store floor ------------------------------------------------------------------------
# SQLite alone (bench/store-floor.c): the most any bus that stores each message before
# `sent` can reach here, with no protocol, pipes or routing.
say "store floor: SQLite alone, $MSGS messages, $FLOOR_BATCH per transaction, x $REPEAT"
if [ "$DURABILITY" = strict ]; then fsync=full; else fsync=normal; fi
: >"$tmp/fb"
: >"$tmp/fd"
k=0
while [ $k -lt "$REPEAT" ]; do
	k=$((k + 1))
	out=$("$tmp/store-floor" bare "$tmp/floor-bare.db" "$MSGS" "$FLOOR_BATCH" $SIZE $fsync) ||
		die "store-floor failed"
	field "$out" msgs_per_s >>"$tmp/fb"
	cp "$tmp/floor-dreamos.db" "$tmp/floor-run.db"
	rm -f "$tmp/floor-run.db-wal" "$tmp/floor-run.db-shm"
	if [ -f "$tmp/floor-dreamos.db-wal" ]; then cp "$tmp/floor-dreamos.db-wal" "$tmp/floor-run.db-wal"; fi
	out=$("$tmp/store-floor" dreamos "$tmp/floor-run.db" "$MSGS" "$FLOOR_BATCH" $SIZE $fsync) ||
		die "store-floor failed"
	field "$out" msgs_per_s >>"$tmp/fd"
	say "  run $k: $(tail -n 1 "$tmp/fb") / $(tail -n 1 "$tmp/fd") msgs/s"
done
FB=$(median <"$tmp/fb") FD=$(median <"$tmp/fd")

# ---- echo -------------------------------------------------------------------------------
say "echo: throughput 1 and $CLIENTS clients, $ECHO_MSGS messages x $REPEAT; latency at $RATE/s"
: >"$tmp/e1"
: >"$tmp/e8"
k=0
while [ $k -lt "$REPEAT" ]; do
	k=$((k + 1))
	out=$("$tmp/echo" thr 1 "$ECHO_MSGS" "$WINDOW" $SIZE) || die "echo failed"
	field "$out" msgs_per_s >>"$tmp/e1"
	out=$("$tmp/echo" thr "$CLIENTS" $((ECHO_MSGS / CLIENTS)) "$WINDOW" $SIZE) || die "echo failed"
	field "$out" msgs_per_s >>"$tmp/e8"
done
E1=$(median <"$tmp/e1") E1S=$(spread <"$tmp/e1")
E8=$(median <"$tmp/e8") E8S=$(spread <"$tmp/e8")
out=$("$tmp/echo" lat "$RATE" "$LAT_N" $SIZE) || die "echo failed"
ELAT50=$(field "$out" rtt_p50_us) ELAT99=$(field "$out" rtt_p99_us)

# ---- the table ----------------------------------------------------------------------------
elapsed=$(awk -v a="$t_start" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }')
cpu=$(sed -n 's/^model name[[:space:]]*: *//p' /proc/cpuinfo 2>/dev/null | head -n 1)
echo
echo "Message bus: $SIZE-byte bodies, sender window $WINDOW, $CLIENTS clients = $CLIENTS senders -> 1 receiver;"
echo "throughput = median of $REPEAT runs; latency = 1 sender at $RATE msgs/s for $LAT_SECS s."
echo "Machine: $(nproc) CPU ${cpu:-?}, $(uname -sr); load average before the run: $load_start."
echo "dreamos store.durability $DURABILITY.  Throughput cells: median [lowest..highest]."
[ "$HOLD" = 0 ] || echo "dreamos's consumer holds the ack of every message whose id is a multiple of $HOLD for one read."
echo
awk -v d1="$D1" -v d8="$D8" -v r1="$R1" -v r8="$R8" -v e1="$E1" -v e8="$E8" \
	-v d1s="$D1S" -v d8s="$D8S" -v r1s="$R1S" -v r8s="$R8S" -v e1s="$E1S" -v e8s="$E8S" \
	-v dl50="$DLAT50" -v dl99="$DLAT99" -v rl50="$RLAT50" -v rl99="$RLAT99" \
	-v el50="$ELAT50" -v el99="$ELAT99" -v n="$CLIENTS" 'BEGIN {
	fmt = "%-18s %30s %30s %11s %11s\n"
	printf fmt, "", "msgs/s, 1 client", "msgs/s, " n " clients", "p50", "p99"
	printf fmt, "dreamos (durable)", d1 " [" d1s "]", d8 " [" d8s "]", dl50 " us", dl99 " us"
	printf fmt, "redis pub/sub", r1 " [" r1s "]", r8 " [" r8s "]", rl50 " us", rl99 " us"
	printf fmt, "echo (floor)", e1 " [" e1s "]", e8 " [" e8s "]", el50 " us", el99 " us"
	print ""
	print "p50/p99: one-way for dreamos and redis, round trip for echo."
	if (r1 + 0 > 0) {
		printf "target: dreamos >= redis, 1 client:  %.3f x  %s\n", d1 / r1, (d1 + 0 >= r1 + 0) ? "met" : "NOT met"
		printf "target: dreamos >= redis, %d clients: %.3f x  %s\n", n, d8 / r8, (d8 + 0 >= r8 + 0) ? "met" : "NOT met"
	}
	printf "target: dreamos p50 <= 3 x echo p50:  %.1f x  %s\n", dl50 / el50, (dl50 + 0 <= 3 * el50) ? "met" : "NOT met"
}'
echo "dreamos $DNOTE (1 sender at $RATE msgs/s)."
# pair N STEM: "1-client 8-client" medians of column N of $tmp/STEM1 and $tmp/STEM8.
pair() { echo "$(col "$1" "$tmp/${2}1") $(col "$1" "$tmp/${2}8")"; }
awk -v d="$(pair 1 dc)" -v dl="$(pair 2 dc)" -v ds="$(pair 3 dc)" -v dk="$(pair 4 dc)" \
	-v dot="$(pair 5 dc)" -v da="$(pair 6 dc)" -v db="$(pair 7 dc)" -v dlb="$(pair 8 dc)" \
	-v r="$(pair 1 rc)" -v rs="$(pair 2 rc)" -v rc="$(pair 3 rc)" -v rb="$(pair 4 rc)" \
	-v rsb="$(pair 5 rc)" -v runs="$REPEAT" -v n="$CLIENTS" -v ncpu="$(nproc)" 'function f(x) {
		return x ~ /^-?[0-9.]+$/ ? sprintf("%.2f", x) : "n/a"
	}
	function p(s, x) { split(s, x, " "); return f(x[1]) " / " f(x[2]) }
	BEGIN {
	printf "CPU per message, us (each figure the median of its %d throughput runs), 1 client / %d clients;\n", runs, n
	printf "CPUs busy = CPU us per message x msgs/s / 1e6 (of the %d CPUs here):\n", ncpu
	printf "  %-8s %s = %s CPUs busy\n", "dreamos", p(d), p(db)
	printf "  %-8s loop %s (%s CPUs), store %s, ckpt %s, other %s;\n", "", p(dl), p(dlb), p(ds), p(dk), p(dot)
	printf "  %-8s agents %s\n", "", p(da)
	printf "  %-8s %s = %s CPUs busy\n", "redis", p(r), p(rb)
	printf "  %-8s redis-server %s (%s CPUs); clients %s\n", "", p(rs), p(rsb), p(rc)
}'
awk -v fb="$FB" -v fd="$FD" -v d1="$D1" -v r1="$R1" -v b="$FLOOR_BATCH" 'BEGIN {
	printf "store floor (SQLite alone, 1 thread, no protocol; %d messages per transaction):\n", b
	printf "  %-38s %8.0f msgs/s", "one bare row per message:", fb
	if (r1 + 0 > 0) printf " = %.2f x redis (1 client)", fb / r1
	printf "\n  %-38s %8.0f msgs/s", "dreamos'"'"'s writes (packed blocks):", fd
	if (r1 + 0 > 0) printf " = %.2f x redis", fd / r1
	printf "; dreamos reached %.2f x this\n", d1 / fd
}'
echo "Whole run: ${elapsed} s."
