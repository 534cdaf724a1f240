#!/bin/sh
# bench/bridge.sh — the Bridge benchmark: HTTP requests/s and latency of dreamos's
# GET /v1/agents beside nginx serving a static file of the same size, in the same run with
# the same load; and the message throughput of remote agents over the WebSocket beside the
# same agents as child processes (pipes).  Prints one report.
#
# Usage: bench/bridge.sh            (no arguments; settings from the environment, below)
#
# What runs:
#   HTTP       a headless dreamos on a fresh runtime (security.rate_limit 1e9 so that the
#              limiter never answers 429, bridge.max_connections 1000, log level warn) with
#              BR_AGENTS tiny agents, so that GET /v1/agents returns a real list (about 330
#              bytes per agent); an observer API key and its session token.  nginx (Debian)
#              on a free loopback port with a temporary config (daemon off, BR_NGINX_WORKERS
#              worker processes, access_log off, keepalive_requests 1000000 since dreamos has
#              no such limit) serving a file holding the very bytes dreamos answered.  wrk
#              (Debian) with the same -t/-c/-d and the same Authorization header against
#              both, alternately, BR_REPEAT times each; requests/s and latency p50/p99 are the
#              median of the runs.  A dreamos run with non-2xx answers is an error.
#   WebSocket  bench/bridge-agent.c (one C program; the transport is the only difference):
#              BR_PRODUCERS producers -> 1 consumer, BR_MSGS messages of 256 bytes, window
#              BR_WINDOW, durable bus (store.durability normal, bus.window BR_WINDOW,
#              heartbeats off), a fresh runtime per run.  "pipes": the agents are children
#              (`agent spawn`); "WebSocket": the same agents connect to the Bridge with agent
#              API keys (token exchange, then GET /v1/stream).  msgs/s = messages / (first
#              producer send .. last message read by the consumer), median of BR_REPEAT runs.
#
# Targets (from the issue): dreamos GET /v1/agents >= 50% of nginx's static-file requests/s;
# WebSocket agents' msgs/s within 20% of child-process agents' (>= 80%).  They are reported
# (MET / NOT MET), not enforced: the exit status is 0 when every measurement ran, 1 when one
# failed.
#
# Environment:
#   DREAMOS           dreamos binary (default: build an optimised one, -O2, in the scratch dir;
#                     _build is usually --enable-debug -O0, which would measure the debug build)
#   CC                C compiler (default cc)
#   BR_THREADS, BR_CONNS, BR_SECS   wrk -t, -c, -d (default 2, 50, 10)
#   BR_REPEAT         runs per measurement, the median is shown (default 3)
#   BR_AGENTS         agents listed by GET /v1/agents (default 5, the size of the demo fleet;
#                     each adds about 320 bytes to the answer)
#   BR_NGINX_WORKERS  nginx worker_processes (default 1: one thread serving, like dreamos's
#                     single event loop; "auto" gives one per CPU)
#   BR_MSGS           messages per WebSocket/pipe run (default 100000)
#   BR_PRODUCERS      producers in those runs (default 1)
#   BR_WINDOW         producer window and bus.window (default 1000)
#   BR_PARTS          what to measure: http, messages or http,messages (default)
#   BR_TMP            scratch directory, kept (default: a new /tmp/dreamos-bridge.XXXXXX, removed)
# Needs: a C compiler, python3, curl, wrk and nginx (apt-get install wrk nginx-light; any
# Debian nginx package will do).  Without wrk the HTTP part is skipped ("n/a"); without nginx
# its row is "n/a".
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
CC=${CC:-cc}
THREADS=${BR_THREADS:-2}
CONNS=${BR_CONNS:-50}
SECS=${BR_SECS:-10}
REPEAT=${BR_REPEAT:-3}
NAGENTS=${BR_AGENTS:-5}
NGX_WORKERS=${BR_NGINX_WORKERS:-1}
MSGS=${BR_MSGS:-100000}
NPROD=${BR_PRODUCERS:-1}
WINDOW=${BR_WINDOW:-1000}
PY=${PYTHON3:-python3}
PARTS=${BR_PARTS:-http,messages}

if [ -n "${BR_TMP:-}" ]; then
	tmp=$BR_TMP
	mkdir -p "$tmp"
else
	tmp=$(mktemp -d /tmp/dreamos-bridge.XXXXXX)
fi
DPID="" NPID="" APIDS=""
cleanup() {
	# Only the processes this script started, by pid.
	for p in $APIDS; do kill -TERM "$p" 2>/dev/null || true; done
	if [ -n "$DPID" ]; then kill -TERM "$DPID" 2>/dev/null || true; fi
	if [ -n "$NPID" ]; then kill -TERM "$NPID" 2>/dev/null || true; fi
	if [ -z "${BR_TMP:-}" ]; then rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { echo "bridge: $*" >&2; }
die() { say "$*"; exit 1; }
now() { date +%s.%N; }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "n/a" }'; }
spread() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[1] ".." v[NR]; else print "n/a" }'; }
kv() { tr ' ' '\n' <"$1" | sed -n "s/^$2=//p" | head -n 1; }
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export no_proxy='*' NO_PROXY='*'

command -v curl >/dev/null 2>&1 || die "curl is needed"

# ---- build --------------------------------------------------------------------------------
say "building the benchmark programs ($CC -O2) in $tmp"
for p in bridge-agent tiny-agent; do
	"$CC" -O2 -Wall -o "$tmp/$p" "$here/$p.c" || die "cannot build $p"
done
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

# start_dreamos DIR CONFIG-TEXT: a fresh runtime in DIR; sets DPID, DRT, DPORT.
start_dreamos() {
	rm -rf "$1"
	mkdir -p "$1"
	printf '%s\nextensions: {load: []}\n' "$2" >"$1/dreamos.yaml"
	DRT=$1/rt
	XDG_CONFIG_HOME=$1 "$D" --headless --runtime "$DRT" --config "$1/dreamos.yaml" \
		--bridge-port 0 --log-level warn </dev/null >"$1/dreamos.out" 2>"$1/dreamos.err" &
	DPID=$!
	i=0
	until [ -S "$DRT/dreamos.sock" ] && "$D" ctl --runtime "$DRT" status >/dev/null 2>&1; do
		i=$((i + 1))
		[ $i -lt 200 ] && kill -0 "$DPID" 2>/dev/null || { cat "$1/dreamos.err" >&2; die "dreamos did not start"; }
		sleep 0.05
	done
	DPORT=$("$D" ctl --runtime "$DRT" status --json |
		"$PY" -c 'import json, sys; print(json.load(sys.stdin)["bridge"]["port"])')
}
stop_dreamos() {
	"$D" ctl --runtime "$DRT" quit >/dev/null 2>&1 || true
	i=0
	while kill -0 "$DPID" 2>/dev/null && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
	kill -KILL "$DPID" 2>/dev/null || true
	wait "$DPID" 2>/dev/null || true
	DPID=""
}
# apikey NAME ROLE: prints a new API key.
apikey() {
	"$D" ctl --runtime "$DRT" apikey create "$1" --role "$2" --json |
		"$PY" -c 'import json, sys; print(json.load(sys.stdin)["key"])'
}
# wait_files SECONDS FILE...: until every FILE exists.
wait_files() {
	wf_end=$(($(date +%s) + $1))
	shift
	for f in "$@"; do
		while [ ! -f "$f" ]; do
			if [ -n "$DPID" ] && ! kill -0 "$DPID" 2>/dev/null; then
				say "dreamos exited"
				return 1
			fi
			[ "$(date +%s)" -le "$wf_end" ] || { say "timed out waiting for $f"; return 1; }
			sleep 0.02
		done
	done
}

t_start=$(now)
load_start=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')

# ---- HTTP: dreamos GET /v1/agents vs nginx static file --------------------------------------
DRSS="?" DRPS=n/a DRPSS=n/a D50=n/a D99=n/a NRPS=n/a NRPSS=n/a N50=n/a N99=n/a BYTES=n/a NGXV=""
case ",$PARTS," in *,http,*) do_http=1 ;; *) do_http=0 ;; esac
case ",$PARTS," in *,messages,*) do_msgs=1 ;; *) do_msgs=0 ;; esac
if [ $do_http = 0 ]; then
	:
elif command -v wrk >/dev/null 2>&1; then
	start_dreamos "$tmp/http" "bridge:
  max_connections: 1000
  connection_timeout: 60s
security:
  rate_limit: 1000000000
agents:
  heartbeat_timeout: 0
  restart: never"
	i=1
	while [ $i -le "$NAGENTS" ]; do
		"$D" ctl --runtime "$DRT" agent spawn "agent-$i" --cap bench -- "$tmp/tiny-agent" bench >/dev/null
		i=$((i + 1))
	done
	i=0
	until [ "$("$D" ctl --runtime "$DRT" status --json |
		"$PY" -c 'import json, sys; print(json.load(sys.stdin)["counts"]["agents_up"])')" = "$NAGENTS" ]; do
		i=$((i + 1))
		[ $i -lt 200 ] || die "the $NAGENTS agents did not become ready"
		sleep 0.05
	done
	KEY=$(apikey bench observer)
	TOKEN=$(curl -s -X POST -H "Authorization: Bearer $KEY" "http://127.0.0.1:$DPORT/v1/auth/token" |
		"$PY" -c 'import json, sys; print(json.load(sys.stdin)["token"])')
	DURL="http://127.0.0.1:$DPORT/v1/agents"
	curl -s -f -H "Authorization: Bearer $TOKEN" -o "$tmp/agents.json" "$DURL" || die "GET /v1/agents failed"
	BYTES=$(wc -c <"$tmp/agents.json" | tr -d ' ')
	NURL=""
	if command -v nginx >/dev/null 2>&1; then
		NGXV=$(nginx -v 2>&1 | sed 's/.*nginx\///')
		ndir=$tmp/nginx
		mkdir -p "$ndir/www" "$ndir/tmp"
		cp "$tmp/agents.json" "$ndir/www/agents.json"
		NPORT=$(free_port)
		userline=""
		[ "$(id -u)" = 0 ] && userline="user root;"
		cat >"$ndir/nginx.conf" <<EOF
$userline
daemon off;
worker_processes $NGX_WORKERS;
pid $ndir/nginx.pid;
error_log $ndir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 60s;
    keepalive_requests 1000000;
    types { application/json json; }
    default_type application/json;
    client_body_temp_path $ndir/tmp/body;
    proxy_temp_path $ndir/tmp/proxy;
    fastcgi_temp_path $ndir/tmp/fastcgi;
    uwsgi_temp_path $ndir/tmp/uwsgi;
    scgi_temp_path $ndir/tmp/scgi;
    server {
        listen 127.0.0.1:$NPORT;
        root $ndir/www;
        location / { }
    }
}
EOF
		nginx -c "$ndir/nginx.conf" -p "$ndir" >"$ndir/nginx.out" 2>&1 &
		NPID=$!
		i=0
		until curl -s -f -o /dev/null "http://127.0.0.1:$NPORT/agents.json"; do
			i=$((i + 1))
			[ $i -lt 100 ] && kill -0 "$NPID" 2>/dev/null || { cat "$ndir/nginx.out" "$ndir/error.log" >&2 2>/dev/null; die "nginx did not start"; }
			sleep 0.05
		done
		[ "$(curl -s "http://127.0.0.1:$NPORT/agents.json" | wc -c | tr -d ' ')" = "$BYTES" ] ||
			die "nginx does not serve the same $BYTES bytes"
		NURL="http://127.0.0.1:$NPORT/agents.json"
	else
		say "nginx not found (apt-get install nginx-light): its row is n/a"
	fi
	# wrk_run URL OUT: one wrk run; fails on socket errors or non-2xx answers.
	wrk_run() {
		wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" --latency -H "Authorization: Bearer $TOKEN" "$1" >"$2" 2>&1 ||
			{ cat "$2" >&2; return 1; }
		if grep -q "Non-2xx" "$2"; then
			cat "$2" >&2
			return 1
		fi
	}
	rps() { sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$1"; }
	# lat FILE PCT: the latency percentile in microseconds.
	lat() {
		awk -v p="$2%" '$1 == p { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
			f = (u == "us") ? 1 : (u == "ms") ? 1000 : (u == "s") ? 1000000 : 1;
			printf "%.0f\n", v * f }' "$1"
	}
	say "HTTP: wrk -t$THREADS -c$CONNS -d${SECS}s, GET /v1/agents ($BYTES bytes, $NAGENTS agents) vs nginx $NGXV ($NGX_WORKERS worker), $REPEAT runs each"
	wrk -t"$THREADS" -c"$CONNS" -d1s -H "Authorization: Bearer $TOKEN" "$DURL" >/dev/null 2>&1 || true
	[ -n "$NURL" ] && { wrk -t"$THREADS" -c"$CONNS" -d1s "$NURL" >/dev/null 2>&1 || true; }
	: >"$tmp/d.rps" && : >"$tmp/d.50" && : >"$tmp/d.99"
	: >"$tmp/n.rps" && : >"$tmp/n.50" && : >"$tmp/n.99"
	k=0
	while [ $k -lt "$REPEAT" ]; do
		k=$((k + 1))
		wrk_run "$DURL" "$tmp/wrk-d$k" || die "wrk against dreamos failed"
		rps "$tmp/wrk-d$k" >>"$tmp/d.rps"
		lat "$tmp/wrk-d$k" 50 >>"$tmp/d.50"
		lat "$tmp/wrk-d$k" 99 >>"$tmp/d.99"
		msg="  run $k: dreamos $(tail -n 1 "$tmp/d.rps") req/s"
		if [ -n "$NURL" ]; then
			wrk_run "$NURL" "$tmp/wrk-n$k" || die "wrk against nginx failed"
			rps "$tmp/wrk-n$k" >>"$tmp/n.rps"
			lat "$tmp/wrk-n$k" 50 >>"$tmp/n.50"
			lat "$tmp/wrk-n$k" 99 >>"$tmp/n.99"
			msg="$msg, nginx $(tail -n 1 "$tmp/n.rps") req/s"
		fi
		say "$msg"
	done
	"$D" ctl --runtime "$DRT" status --json >"$tmp/http/status.json" 2>/dev/null || true
	DRSS=$(awk '/^VmHWM/ { print $2 }' "/proc/$DPID/status" 2>/dev/null || echo '?')
	DRPS=$(median <"$tmp/d.rps") DRPSS=$(spread <"$tmp/d.rps")
	D50=$(median <"$tmp/d.50") D99=$(median <"$tmp/d.99")
	if [ -n "$NURL" ]; then
		NRPS=$(median <"$tmp/n.rps") NRPSS=$(spread <"$tmp/n.rps")
		N50=$(median <"$tmp/n.50") N99=$(median <"$tmp/n.99")
		kill -TERM "$NPID" 2>/dev/null || true
		wait "$NPID" 2>/dev/null || true
		NPID=""
	fi
	stop_dreamos
else
	say "wrk not found (apt-get install wrk): the HTTP part is skipped"
fi

# ---- WebSocket vs pipes: message throughput --------------------------------------------------
# msg_run DIR ws|pipe: one producer(s) -> consumer run on a fresh runtime; prints msgs/s.
msg_run() {
	RUN=$1
	total=$((MSGS / NPROD * NPROD))
	each=$((MSGS / NPROD))
	start_dreamos "$RUN" "bridge:
  max_connections: 100
security:
  rate_limit: 1000000000
agents:
  heartbeat_timeout: 0
  restart: never
bus:
  window: $WINDOW
store:
  durability: normal"
	if [ "$2" = ws ]; then
		"$tmp/bridge-agent" consumer --count "$total" --out "$RUN/consumer" \
			--ws "127.0.0.1:$DPORT" --key "$(apikey consumer agent)" 2>"$RUN/consumer.err" &
		APIDS="$APIDS $!"
	else
		"$D" ctl --runtime "$DRT" agent spawn consumer --cap bench -- \
			"$tmp/bridge-agent" consumer --count "$total" --out "$RUN/consumer" >/dev/null
	fi
	wait_files 10 "$RUN/consumer.ready" || return 1
	ready="" results=""
	i=1
	while [ $i -le "$NPROD" ]; do
		if [ "$2" = ws ]; then
			"$tmp/bridge-agent" producer --to consumer --count "$each" --window "$WINDOW" \
				--go "$RUN/go" --out "$RUN/p$i" --ws "127.0.0.1:$DPORT" \
				--key "$(apikey "p$i" agent)" 2>"$RUN/p$i.err" &
			APIDS="$APIDS $!"
		else
			"$D" ctl --runtime "$DRT" agent spawn "p$i" --cap bench -- "$tmp/bridge-agent" producer \
				--to consumer --count "$each" --window "$WINDOW" --go "$RUN/go" --out "$RUN/p$i" >/dev/null
		fi
		ready="$ready $RUN/p$i.ready"
		results="$results $RUN/p$i"
		i=$((i + 1))
	done
	# shellcheck disable=SC2086
	wait_files 10 $ready || return 1
	: >"$RUN/go"
	# shellcheck disable=SC2086
	wait_files 300 $results "$RUN/consumer" || return 1
	# shellcheck disable=SC2086
	errs=$(for f in $results; do kv "$f" errors; done | awk '{ s += $1 } END { print s + 0 }')
	[ "$errs" = 0 ] || { say "$RUN: $errs sends were refused"; return 1; }
	# shellcheck disable=SC2086
	t0=$(for f in $results; do kv "$f" start_ns; done | sort -n | head -n 1)
	t1=$(kv "$RUN/consumer" last_ns)
	stop_dreamos
	for p in $APIDS; do
		kill -TERM "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	APIDS=""
	awk -v n="$total" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f\n", n / ((b - a) / 1e9) }'
}

MP=n/a MPS=n/a MW=n/a MWS=n/a
: >"$tmp/m.pipe"
: >"$tmp/m.ws"
[ $do_msgs = 1 ] &&
	say "messages: $NPROD producer(s) -> 1 consumer, $MSGS x 256 bytes, window $WINDOW, pipes and WebSocket alternately, $REPEAT runs each"
k=0
while [ $do_msgs = 1 ] && [ $k -lt "$REPEAT" ]; do
	k=$((k + 1))
	msg_run "$tmp/pipe-$k" pipe >"$tmp/m.out" || die "pipe run $k failed"
	cat "$tmp/m.out" >>"$tmp/m.pipe"
	msg_run "$tmp/ws-$k" ws >"$tmp/m.out" || die "WebSocket run $k failed"
	cat "$tmp/m.out" >>"$tmp/m.ws"
	say "  run $k: pipes $(tail -n 1 "$tmp/m.pipe") msgs/s, WebSocket $(tail -n 1 "$tmp/m.ws") msgs/s"
done
if [ $do_msgs = 1 ]; then
	MP=$(median <"$tmp/m.pipe") MPS=$(spread <"$tmp/m.pipe")
	MW=$(median <"$tmp/m.ws") MWS=$(spread <"$tmp/m.ws")
fi

# ---- the report -------------------------------------------------------------------------------
elapsed=$(awk -v a="$t_start" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }')
cpu=$(sed -n 's/^model name[[:space:]]*: *//p' /proc/cpuinfo 2>/dev/null | head -n 1)
echo
echo "Bridge: $(nproc) CPU ${cpu:-?}, $(uname -sr); load average before the run: $load_start; $elapsed s."
echo
if [ $do_http = 1 ]; then
	echo "HTTP: wrk -t$THREADS -c$CONNS -d${SECS}s --latency, median of $REPEAT runs [lowest..highest]; $BYTES-byte answers."
	awk -v drps="$DRPS" -v drpss="$DRPSS" -v d50="$D50" -v d99="$D99" -v nrps="$NRPS" \
		-v nrpss="$NRPSS" -v n50="$N50" -v n99="$N99" -v nw="$NGX_WORKERS" -v nv="$NGXV" 'BEGIN {
		fmt = "%-40s %28s %10s %10s\n"
		printf fmt, "", "requests/s", "p50", "p99"
		printf fmt, "dreamos GET /v1/agents (token)", drps " [" drpss "]", d50 " us", d99 " us"
		printf fmt, "nginx " nv " static file (" nw " worker)", nrps " [" nrpss "]", n50 " us", n99 " us"
	}'
	echo "dreamos peak RSS during the HTTP runs: $DRSS kB; $NAGENTS agents listed."
	echo
fi
if [ $do_msgs = 1 ]; then
	echo "Messages: $NPROD producer(s) -> 1 consumer, $MSGS x 256-byte bodies, window $WINDOW, durable bus;"
	echo "msgs/s, median of $REPEAT runs [lowest..highest]."
	awk -v mp="$MP" -v mps="$MPS" -v mw="$MW" -v mws="$MWS" 'BEGIN {
		fmt = "%-40s %28s\n"
		printf fmt, "", "msgs/s"
		printf fmt, "child processes (pipes)", mp " [" mps "]"
		printf fmt, "remote agents (WebSocket)", mw " [" mws "]"
	}'
	echo
fi
awk -v drps="$DRPS" -v nrps="$NRPS" -v mp="$MP" -v mw="$MW" 'BEGIN {
	if (drps + 0 > 0 && nrps + 0 > 0) {
		r = drps / nrps
		printf "Target: GET /v1/agents >= 50%% of nginx static: %.0f%% -> %s\n", 100 * r, (r >= 0.5 ? "MET" : "NOT MET")
	} else
		print "Target: GET /v1/agents >= 50% of nginx static: not measured"
	if (mp + 0 > 0 && mw + 0 > 0) {
		r = mw / mp
		printf "Target: WebSocket agents within 20%% of pipes: %.0f%% of the pipes rate -> %s\n", 100 * r, (r >= 0.8 ? "MET" : "NOT MET")
	} else
		print "Target: WebSocket agents within 20% of pipes: not measured"
}'
