#!/usr/bin/env bash
# Benchmarks orderflow on this machine: builds the release binaries, starts a
# throwaway nats-server (free port, temporary store, monitoring endpoint on
# another free port) and both services, runs orderflow-bench against them,
# and stops everything it started. The bench gets the broker's monitoring URL
# and the pids of the broker and the services, so its report has the
# broker's messages and bytes and each process's CPU time per saga. The
# bench's report is this script's only stdout; everything else goes to
# stderr, and the logs to target/bench/logs/.
#
#   scripts/bench.sh [OPTIONS] [-- BENCH ARGS...]
#
#   --tracing MODE  how the services trace: default (no OTLP endpoint, the
#                   services' default), off (OTEL_SDK_DISABLED=true), or on
#                   (every span exported over OTLP/gRPC to
#                   `orderflow-bench otlp-sink`, whose counts are printed to
#                   stderr at the end)
#   --create-only   start the order service without the payment service
#                   (nothing else consumes its events) and measure
#                   CreateOrder alone (orderflow-bench --create-only)
#   --bare          start `orderflow-bench bare-order-server` instead of the
#                   services: a bare CreateOrder handler that publishes one
#                   message to a scratch stream and awaits its ack, nothing
#                   else (the reference of issue 12's CreateOrder goal), and
#                   measure it like --create-only, its pid as the order pid
#                   (CPU per CreateOrder); not with --tracing or --full
#   --secure        run the deployment secured as deploy/ secures it: both
#                   services with mutual TLS (certificates of a throwaway CA
#                   from `orderflow-test-pki`, the tests' own), JWT
#                   authentication (a random HS256 secret, and a token from
#                   scripts/mint-token.py) and their least-privilege NATS
#                   users of deploy/nats/auth.conf (random passwords); the
#                   bench connects with TLS, a client certificate and the
#                   token, and its observer and baseline log in to the same
#                   broker as the user `ops`. Its report says
#                   "security": {"mode": "secure", ...}. Not with --bare or
#                   --full
#   --nats-tls      with --secure, NATS speaks TLS too, and every client
#                   verifies its certificate (the deployments of deploy/ run
#                   NATS without TLS, so --secure alone does too)
#   --secure-ratio  back-to-back runs of the same bench arguments, unsecured
#                   and secured, --repeat times (the order alternates, so a
#                   drift of the machine's load favours neither); prints each
#                   run's sagas/s and CPU per saga and the median of the
#                   pairs' ratios: secured / unsecured sagas/s, and
#                   unsecured / secured CPU per saga (the goal of
#                   docs/benchmarks.md is >= 0.90 for each). The bench
#                   arguments (default `--duration 10s --baseline`) get
#                   --json added; the reports go to target/bench/secure-ratio/
#   --repeat N      how many pairs --secure-ratio runs (default 3)
#   --workers N     worker threads of each service and of the bare server
#                   (TOKIO_WORKER_THREADS), default 1: what deploy/k8s's CPU
#                   limit of 500m gives them, where this machine's CPU count
#                   would give each one worker per CPU; `auto` leaves the
#                   variable unset (one per CPU). The report's label says
#                   nothing of it; the --full summary does
#   --debug         use the debug binaries (cargo build, no --release): for
#                   the smoke test, never for figures
#   --no-build      use the binaries as they are
#   --full          the documented sequence (docs/benchmarks.md): start-up
#                   time and idle RSS of both binaries, the main run with
#                   --baseline and --sweep (writes docs/bench-latency.svg;
#                   the sweep also bisects for the saga p99 goal), the
#                   create-only run, the same against the bare server
#                   (--bare), then tracing off and tracing on, and tracing
#                   off without the payment deadline (what it adds), then
#                   every saga counted, by kind (--by-kind), of a closed loop
#                   (BENCH_COUNT orders, 40,000) and of a steady rate
#                   (BENCH_STEADY_COUNT orders, 8,000, at BENCH_STEADY_RATE
#                   per second, 800); JSON results go to target/bench/ and a
#                   summary table to stdout
#
# The services log as deploy/ runs them, LOG_FORMAT=json; set LOG_FORMAT=text
# in the environment to measure the text format instead.
#
# Everything after `--` goes to orderflow-bench (see `orderflow-bench --help`),
# e.g. `scripts/bench.sh -- --duration 30s --concurrency 64 --baseline`.
# shellcheck disable=SC2317 # cleanup functions run from the EXIT trap
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/install-tools.sh
source scripts/install-tools.sh

TRACING=default
PROFILE=release
BUILD=1
FULL=0
CREATE_ONLY=0
BARE=0
SECURE=0
NATS_TLS=0
SECURE_RATIO=0
REPEAT=3
WORKERS=1
BENCH_ARGS=()
while (($#)); do
  case "$1" in
    --tracing)
      TRACING=${2:-}
      shift 2 || { echo "error: --tracing needs default, off or on" >&2; exit 2; }
      ;;
    --create-only) CREATE_ONLY=1; shift ;;
    --bare) BARE=1; shift ;;
    --secure) SECURE=1; shift ;;
    --nats-tls) NATS_TLS=1; shift ;;
    --secure-ratio) SECURE_RATIO=1; shift ;;
    --repeat)
      REPEAT=${2:-}
      shift 2 || { echo "error: --repeat needs a number of pairs" >&2; exit 2; }
      ;;
    --workers)
      WORKERS=${2:-}
      shift 2 || { echo "error: --workers needs a number of threads or auto" >&2; exit 2; }
      ;;
    --debug) PROFILE=debug; shift ;;
    --no-build) BUILD=0; shift ;;
    --full) FULL=1; shift ;;
    --)
      shift
      BENCH_ARGS=("$@")
      break
      ;;
    -h | --help)
      sed -n '2,/^# shellcheck/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "error: unknown option $1 (bench arguments go after --); see --help" >&2
      exit 2
      ;;
  esac
done
case "$TRACING" in
  default | off | on) ;;
  *) echo "error: --tracing must be default, off or on (got '$TRACING')" >&2; exit 2 ;;
esac
[[ "$WORKERS" == auto || "$WORKERS" =~ ^[1-9][0-9]*$ ]] || { echo "error: --workers must be a positive whole number or auto (got '$WORKERS')" >&2; exit 2; }
[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || { echo "error: --repeat must be a positive whole number (got '$REPEAT')" >&2; exit 2; }
if ((NATS_TLS && !SECURE && !SECURE_RATIO)); then
  echo "error: --nats-tls secures NATS of a --secure (or --secure-ratio) run; add --secure" >&2
  exit 2
fi
if ((SECURE || SECURE_RATIO)); then
  ((!BARE)) || { echo "error: the bare server has no TLS, tokens or NATS users; leave out --bare or --secure" >&2; exit 2; }
  ((!FULL)) || { echo "error: --full measures the unsecured deployment; run --secure (or --secure-ratio) on its own" >&2; exit 2; }
fi
if ((SECURE && SECURE_RATIO)); then
  echo "error: --secure-ratio runs both the unsecured and the secured deployment; leave out --secure" >&2
  exit 2
fi
if ((BARE)); then
  [[ "$TRACING" == default ]] || { echo "error: the bare server does not trace; leave out --tracing" >&2; exit 2; }
  ((!FULL)) || { echo "error: --full runs the bare server in a stage of its own; leave out --bare" >&2; exit 2; }
fi

OUT=target/bench
LOGS=$OUT/logs
BIN=target/$PROFILE
mkdir -p "$LOGS"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/orderflow-bench.XXXXXX")

# PIDs of what this script started.
NATS_PID=""
ORDER_PID=""
PAYMENT_PID=""
SINK_PID=""
# What runs as the order service: order-service, or bare-order-server.
ORDER_NAME="order-service"

log() { echo "bench.sh: $*" >&2; }

# A free loopback TCP port (the kernel picks it; nothing holds it afterwards).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# True when something accepts TCP connections on 127.0.0.1:$1.
listening() {
  timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# Sends SIGTERM to pid $2 (named $1) and waits up to 30 s before SIGKILL.
stop_pid() {
  local name=$1 pid=$2
  [[ -n "$pid" ]] || return 0
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 300); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name did not stop within 30 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# Warns when pid $2 is not binary $1 (a wrapper on PATH that did not exec
# it): the bench would report the wrapper's CPU time as $1's. /proc's comm
# holds the first 15 characters of the name.
check_pid() {
  local comm
  comm=$(cat "/proc/$2/comm" 2>/dev/null || true)
  [[ "$comm" == "${1:0:15}" ]] || log "warning: pid $2 is '$comm', not $1: its CPU figures are not $1's"
}

# CPU seconds (user + system) pid $1 has used, from /proc (USER_HZ is 100).
cpu_seconds() {
  awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$1/stat" 2>/dev/null || echo null
}

# Stops the OTLP sink after the services (so their last spans are in), and
# tells how much CPU it used: the sink shares the machine with what it
# measures, so its cost is part of the "tracing on" figures.
stop_sink() {
  [[ -n "$SINK_PID" ]] || return 0
  log "otlp-sink used $(cpu_seconds "$SINK_PID") s of CPU"
  stop_pid otlp-sink "$SINK_PID"
  SINK_PID=""
}

# The CPU seconds the services (and the sink) have used over their whole
# life, as JSON, into $CPU_FILE when it is set: CPU per saga is steadier than
# throughput on a shared machine. nats-server's is left out, as the baseline
# used it too. (The bench's own cpu_us_per_saga covers its measured window
# only, nats-server included.)
CPU_FILE=""
stop_services() {
  if [[ -n "$ORDER_PID" ]]; then
    local order payment=null sink=null
    order=$(cpu_seconds "$ORDER_PID")
    [[ -n "$PAYMENT_PID" ]] && payment=$(cpu_seconds "$PAYMENT_PID")
    [[ -n "$SINK_PID" ]] && sink=$(cpu_seconds "$SINK_PID")
    log "CPU used: $ORDER_NAME $order s, payment-service $payment s"
    if [[ -n "$CPU_FILE" ]]; then
      echo "{\"order_service_s\": $order, \"order_process\": \"$ORDER_NAME\", \"payment_service_s\": $payment, \"otlp_sink_s\": $sink}" >"$CPU_FILE"
    fi
  fi
  stop_pid "$ORDER_NAME" "$ORDER_PID"
  stop_pid payment-service "$PAYMENT_PID"
  ORDER_PID="" PAYMENT_PID=""
}

stop_stack() {
  stop_services
  stop_pid nats-server "$NATS_PID"
  stop_pid otlp-sink "$SINK_PID"
  NATS_PID="" SINK_PID=""
  rm -rf "$WORK/nats"
}

cleanup() {
  trap - EXIT INT TERM
  stop_stack
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts a nats-server with JetStream on a free port, its monitoring endpoint
# (/varz) on another, and a fresh store; sets NATS_URL and NATS_MONITOR_URL.
start_nats() {
  local port monitor_port
  port=$(free_port)
  monitor_port=$(free_port)
  mkdir -p "$WORK/nats"
  local secure_args=() secure_env=()
  if ((SECURE)); then
    # The users and permissions of deploy/nats/auth.conf as they are; the
    # command line's port, address, store and TLS override the file.
    secure_args=(-c deploy/nats/auth.conf)
    local var
    for var in $(nats_password_vars); do
      secure_env+=("$var=$(cat "$SECRETS/$(nats_user_of "$var").pw")")
    done
    if ((NATS_TLS)); then
      secure_args+=(--tls --tlscert "$SECRETS/pki/server.pem" --tlskey "$SECRETS/pki/server-key.pem")
    fi
  fi
  # `env` execs nats-server, so its pid is the server's.
  env "${secure_env[@]}" nats-server "${secure_args[@]}" -js -a 127.0.0.1 -p "$port" -m "$monitor_port" -sd "$WORK/nats" \
    >"$LOGS/nats.log" 2>&1 &
  NATS_PID=$!
  for _ in $(seq 100); do
    listening "$port" && listening "$monitor_port" && break
    kill -0 "$NATS_PID" 2>/dev/null || break
    sleep 0.1
  done
  if ! listening "$port" || ! listening "$monitor_port"; then
    log "nats-server did not start; the end of $LOGS/nats.log:"
    tail -n 20 "$LOGS/nats.log" >&2
    exit 1
  fi
  check_pid nats-server "$NATS_PID"
  NATS_URL="nats://127.0.0.1:$port"
  NATS_MONITOR_URL="http://127.0.0.1:$monitor_port"
}

# Starts the OTLP sink on a free port; sets OTLP_ENDPOINT.
start_sink() {
  local port
  port=$(free_port)
  "$BIN/orderflow-bench" otlp-sink --addr "127.0.0.1:$port" >"$LOGS/otlp-sink.json" 2>"$LOGS/otlp-sink.log" &
  SINK_PID=$!
  for _ in $(seq 100); do
    listening "$port" && break
    sleep 0.05
  done
  OTLP_ENDPOINT="http://127.0.0.1:$port"
}

# The environment of the services for tracing mode $1.
tracing_env() {
  case "$1" in
    default) echo "OTEL_SDK_DISABLED=false" ;;
    off) echo "OTEL_SDK_DISABLED=true" ;;
    # A short export delay and a deep queue, so that every span of the run
    # is exported (the defaults, 5 s and 2048, would drop most of them and
    # make tracing look cheaper than it is).
    on) echo "OTEL_EXPORTER_OTLP_ENDPOINT=$OTLP_ENDPOINT OTEL_BSP_SCHEDULE_DELAY=${BENCH_BSP_SCHEDULE_DELAY:-200} OTEL_BSP_MAX_QUEUE_SIZE=${BENCH_BSP_MAX_QUEUE_SIZE:-65536}" ;;
  esac
}

# The worker threads of what this script starts as a service: none when
# --workers auto.
workers_env() {
  if [[ "$WORKERS" != auto ]]; then echo "TOKIO_WORKER_THREADS=$WORKERS"; fi
}

# Waits until what runs as $1 (pid $2) answers SERVING on port $3, asked
# with the order service's probe (any gRPC health server answers it); exits
# with the end of its log when it dies first or takes over a minute.
wait_serving() {
  local name=$1 pid=$2 port=$3
  local deadline=$((SECONDS + 60))
  until "$BIN/order-service" probe --addr "127.0.0.1:$port" --timeout-ms 1000 >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null || ((SECONDS >= deadline)); then
      log "$name did not become SERVING; the end of $LOGS/$name.log:"
      tail -n 20 "$LOGS/$name.log" >&2
      exit 1
    fi
    sleep 0.1
  done
}

# The environment of service $1 in a --secure run: mutual TLS on the API
# port, a plaintext health listener on port $2 for the probe (as in
# Kubernetes), JWT authentication, and its own NATS user.
service_security_env() {
  local pki=$SECRETS/pki
  echo "GRPC_TLS_CERT_FILE=$pki/server.pem GRPC_TLS_KEY_FILE=$pki/server-key.pem GRPC_TLS_CLIENT_CA_FILE=$pki/ca.pem"
  echo "GRPC_HEALTH_ADDR=127.0.0.1:$2"
  echo "AUTH_JWT_ISSUER=$JWT_ISSUER AUTH_JWT_AUDIENCE=$JWT_AUDIENCE AUTH_JWT_SECRET_FILE=$SECRETS/jwt-secret"
  echo "NATS_USER=$1 NATS_PASSWORD_FILE=$SECRETS/$1.pw"
  if ((NATS_TLS)); then echo "NATS_TLS_CA_FILE=$pki/ca.pem"; fi
}

# Starts service $1 on a free port, waits for SERVING; sets ${1}_PORT.
start_service() {
  local name=$1 port pid health_port security=()
  port=$(free_port)
  health_port=$port
  if ((SECURE)); then
    health_port=$(free_port)
    # shellcheck disable=SC2207 # service_security_env gives separate NAME=value words without spaces
    security=($(service_security_env "$name" "$health_port"))
  fi
  # Logs as deploy/ configures them (LOG_FORMAT=json) unless the caller
  # says otherwise: the format changes what a span costs the log layer.
  # shellcheck disable=SC2046 # tracing_env gives separate NAME=value words
  env -u OTEL_EXPORTER_OTLP_ENDPOINT -u OTEL_SDK_DISABLED -u TOKIO_WORKER_THREADS \
    $(tracing_env "$TRACING") $(workers_env) LOG_FORMAT="${LOG_FORMAT:-json}" NATS_URL="$NATS_URL" GRPC_ADDR="127.0.0.1:$port" "${security[@]}" \
    "$BIN/$name" >"$LOGS/$name.log" 2>&1 &
  pid=$!
  wait_serving "$name" "$pid" "$health_port"
  check_pid "$name" "$pid"
  case "$name" in
    order-service) ORDER_PID=$pid ORDER_PORT=$port ;;
    payment-service) PAYMENT_PID=$pid ;;
  esac
}

# Starts `orderflow-bench bare-order-server` on a free port as the order
# service (ORDER_PID, ORDER_PORT) and waits for SERVING, asked with the order
# service's probe as the services are.
start_bare() {
  local port pid
  port=$(free_port)
  # shellcheck disable=SC2046 # workers_env gives one NAME=value word or none
  env -u TOKIO_WORKER_THREADS $(workers_env) "$BIN/orderflow-bench" bare-order-server --nats-url "$NATS_URL" --listen "127.0.0.1:$port" \
    >"$LOGS/bare-order-server.log" 2>&1 &
  pid=$!
  # Known at once, so the EXIT trap stops it also when it never serves.
  ORDER_NAME=bare-order-server ORDER_PID=$pid
  wait_serving bare-order-server "$pid" "$port"
  check_pid orderflow-bench "$pid"
  ORDER_PORT=$port
}

# A fresh broker and both services (only the order service when
# $CREATE_ONLY, only the bare server when $BARE), traced as $TRACING.
start_stack() {
  local payment=running
  start_nats
  if [[ "$TRACING" == on ]]; then start_sink; fi
  ORDER_NAME="order-service"
  if ((BARE)); then start_bare; else start_service order-service; fi
  if ((CREATE_ONLY || BARE)); then payment="not started"; else start_service payment-service; fi
  local described=unsecured
  if ((SECURE)); then
    described="secured (mutual TLS, JWT, NATS users of deploy/nats/auth.conf"
    if ((NATS_TLS)); then described+=", NATS over TLS)"; else described+=")"; fi
  fi
  log "nats $NATS_URL (monitor $NATS_MONITOR_URL), $ORDER_NAME 127.0.0.1:$ORDER_PORT, payment-service $payment, tracing $TRACING, $described ($BIN)"
}

# Runs orderflow-bench against the running stack with arguments "$@", telling
# it the broker's monitoring URL and the pids of what this script started
# (each is the binary's own pid: `env` execs the service).
bench() {
  local known=(--nats-monitor-url "$NATS_MONITOR_URL" --nats-pid "$NATS_PID" --order-pid "$ORDER_PID")
  if [[ -n "$PAYMENT_PID" ]]; then known+=(--payment-pid "$PAYMENT_PID"); fi
  if ((CREATE_ONLY || BARE)); then known+=(--create-only); fi
  local target="http://127.0.0.1:$ORDER_PORT" security=()
  if ((SECURE)); then
    local pki=$SECRETS/pki
    target="https://127.0.0.1:$ORDER_PORT"
    security=(--tls-ca-file "$pki/ca.pem" --tls-cert-file "$pki/client.pem" --tls-key-file "$pki/client-key.pem"
      --tls-domain localhost --token-file "$SECRETS/token" --nats-user ops --nats-password-file "$SECRETS/ops.pw")
    if ((NATS_TLS)); then security+=(--nats-tls-ca-file "$pki/ca.pem"); fi
  fi
  "$BIN/orderflow-bench" --target "$target" --nats-url "$NATS_URL" "${known[@]}" "${security[@]}" "$@"
}

# The password variables deploy/nats/auth.conf names ($ORDER_SERVICE_NATS_PASSWORD,
# ...): nats-server refuses to start with one unset, so every user the file
# has gets one, whoever it is.
nats_password_vars() {
  grep -o '\$[A-Z][A-Z_]*_NATS_PASSWORD' deploy/nats/auth.conf | tr -d '$' | sort -u
}

# The user of password variable $1: ORDER_SERVICE_NATS_PASSWORD -> order-service.
nats_user_of() {
  local user=${1%_NATS_PASSWORD}
  user=${user//_/-}
  echo "${user,,}"
}

# The secrets of a secured deployment, made once per script run in
# $SECRETS (under $WORK, deleted at exit): the throwaway PKI, an HS256
# secret and a bearer token minted with it (CreateOrder needs no role), and
# a random password for each user of deploy/nats/auth.conf.
SECRETS=$WORK/secrets
JWT_ISSUER=https://bench.orderflow.invalid
JWT_AUDIENCE=orderflow
make_secrets() {
  (
    umask 077
    mkdir -p "$SECRETS"
    "$PKI_BIN" "$SECRETS/pki"
    head -c 48 /dev/urandom | base64 -w0 >"$SECRETS/jwt-secret"
    python3 scripts/mint-token.py --secret-file "$SECRETS/jwt-secret" --issuer "$JWT_ISSUER" \
      --audience "$JWT_AUDIENCE" --subject orderflow-bench --ttl 86400 >"$SECRETS/token"
    for var in $(nats_password_vars); do
      head -c 24 /dev/urandom | base64 -w0 | tr -d '/+=' >"$SECRETS/$(nats_user_of "$var").pw"
    done
    for user in order-service payment-service ops; do
      [[ -s "$SECRETS/$user.pw" ]] || { echo "bench.sh: deploy/nats/auth.conf has no password variable of $user" >&2; exit 1; }
    done
  )
}

add_pip_scripts_to_path
ensure_nats_server any

# The certificates of --secure come from the tests' own PKI code, a
# test-only crate: always a debug build (scripts/test.sh builds it too).
PKI_BIN=target/debug/orderflow-test-pki
if ((BUILD)); then
  log "building ($PROFILE)..."
  if [[ "$PROFILE" == release ]]; then
    cargo build --release -p orderflow-bench -p order-service -p payment-service >&2
    if ((SECURE || SECURE_RATIO)); then cargo build -p orderflow-testkit --bin orderflow-test-pki >&2; fi
  elif ((SECURE || SECURE_RATIO)); then
    # One invocation, so that the dependencies are built once, with one set
    # of features.
    cargo build -p orderflow-bench -p order-service -p payment-service -p orderflow-testkit --bins >&2
  else
    cargo build -p orderflow-bench -p order-service -p payment-service >&2
  fi
fi
if ((SECURE || SECURE_RATIO)); then
  if [[ ! -x "$PKI_BIN" ]]; then
    log "$PKI_BIN is missing; run without --no-build"
    exit 1
  fi
  make_secrets
fi
for binary in orderflow-bench order-service payment-service; do
  if [[ ! -x "$BIN/$binary" ]]; then
    log "$BIN/$binary is missing; run without --no-build"
    exit 1
  fi
done

if ((SECURE_RATIO)); then
  ((${#BENCH_ARGS[@]})) || BENCH_ARGS=(--duration 10s --baseline)
  RATIO_OUT=$OUT/secure-ratio
  rm -rf "$RATIO_OUT"
  mkdir -p "$RATIO_OUT"
  LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
  for i in $(seq "$REPEAT"); do
    # Alternate which goes first, so that a trend in the machine's load
    # (another job starting or ending) favours neither.
    if ((i % 2)); then order=(unsecured secured); else order=(secured unsecured); fi
    for mode in "${order[@]}"; do
      if [[ "$mode" == secured ]]; then SECURE=1; else SECURE=0; fi
      log "pair $i of $REPEAT: $mode"
      start_stack
      bench --label "$mode-$i" --json "${BENCH_ARGS[@]}" >"$RATIO_OUT/$mode-$i.json"
      stop_stack
    done
  done
  SECURE=0
  COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  if [[ -n "$(git status --porcelain 2>/dev/null)" ]]; then COMMIT="$COMMIT + uncommitted changes"; fi
  python3 - "$RATIO_OUT" "$REPEAT" "$COMMIT" "$LOAD_BEFORE" "$(cut -d' ' -f1-3 /proc/loadavg)" "$NATS_TLS" "${BENCH_ARGS[*]}" <<'EOF'
import json, pathlib, statistics, sys
out, repeat, commit, load_before, load_after, nats_tls, args = sys.argv[1:8]
repeat = int(repeat)
runs = {(m, i): json.loads((pathlib.Path(out) / f"{m}-{i}.json").read_text())
        for m in ("unsecured", "secured") for i in range(1, repeat + 1)}
def cpu(r):
    c = r.get("cpu_us_per_saga") or {}
    return sum(c.values()) if c else None
num = lambda v, f=".0f": "-" if v is None else format(v, f)
first = runs[("unsecured", 1)]
secured = "mutual TLS, JWT, NATS users of deploy/nats/auth.conf" + (", NATS over TLS" if nats_tls == "1" else "")
print(f"machine: {first['machine']['cpus']} CPU(s), {first['machine']['cpu_model']}; commit {commit}; "
      f"load average before {load_before}, after {load_after}; bench arguments: {args}; secured: {secured}")
print()
print("| pair | run | security (report) | sagas/s | saga p99 | raw publish/s | sagas / raw | CPU per saga: order + payment + nats-server | bench CPU | errors |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for i in range(1, repeat + 1):
    for m in ("unsecured", "secured"):
        r = runs[(m, i)]
        c = r.get("cpu_us_per_saga") or {}
        parts = " + ".join(f"{c[k]:.0f}" for k in ("order_service", "payment_service", "nats_server") if k in c)
        s = r["security"]
        sec = (f"{s['mode']}: gRPC {s['grpc']}, token {'yes' if s['bearer_token'] else 'no'}, "
               f"NATS {s['nats_auth']}, NATS TLS {s['nats_tls']}")
        print(f"| {i} | {m} | {sec} | {r['saga_rps']:.0f} | {r['saga_p99_ms']:.2f} ms | {num(r.get('baseline_publish_rps'))} | "
              f"{num((r.get('ratios') or {}).get('saga_vs_baseline'), '.3f')} | {parts} = {num(cpu(r))} us | "
              f"{num(r.get('bench_cpu_percent'))} % | {r['errors_total']} |")
rps, cpus, rel = [], [], []
for i in range(1, repeat + 1):
    u, s = runs[("unsecured", i)], runs[("secured", i)]
    if u["saga_rps"] > 0:
        rps.append(s["saga_rps"] / u["saga_rps"])
    if cpu(u) and cpu(s):
        cpus.append(cpu(u) / cpu(s))
    ur, sr = ((x.get("ratios") or {}).get("saga_vs_baseline") for x in (u, s))
    if ur and sr:
        rel.append(sr / ur)
def med(xs):
    if not xs:
        return "-"
    return f"{statistics.median(xs):.3f} (pairs: {', '.join(format(x, '.3f') for x in xs)})"
print()
print("| figure | median of the pairs | goal |")
print("| --- | --- | --- |")
print(f"| sagas/s, secured / unsecured | {med(rps)} | >= 0.90 |")
print(f"| CPU per saga (order-service + payment-service + nats-server), unsecured / secured | {med(cpus)} | >= 0.90 |")
print(f"| sagas / raw publish of the same broker, secured / unsecured | {med(rel)} | |")
errors = sum(r["errors_total"] for r in runs.values())
unfinished = sum(r["sagas_unfinished"] for r in runs.values())
print()
print(f"errors: {errors}, unfinished sagas: {unfinished}; reports in {out}/")
EOF
  exit 0
fi

if ((!FULL)); then
  start_stack
  status=0
  bench "${BENCH_ARGS[@]}" || status=$?
  if [[ "$TRACING" == on ]]; then
    stop_services # flush the last spans into the sink before it counts
    stop_sink
    log "otlp-sink received: $(cat "$LOGS/otlp-sink.json")"
  fi
  exit "$status"
fi

# The full sequence of docs/benchmarks.md.
# Every run but 7/9 measures the services with their default payment deadline.
unset ORDER_PAYMENT_DEADLINE_SECS
DURATION=${BENCH_DURATION:-10s}
SWEEP_DURATION=${BENCH_SWEEP_DURATION:-6s}
COUNT_ORDERS=${BENCH_COUNT:-40000}
STEADY_RATE=${BENCH_STEADY_RATE:-800}
STEADY_ORDERS=${BENCH_STEADY_COUNT:-8000}

# Other work on the machine skews every figure; the summary shows the load.
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "1/9 start to SERVING and idle RSS"
start_nats
export NATS_URL
for name in order-service payment-service; do
  # The services inherit the worker count; the startup mode generates no load.
  # shellcheck disable=SC2046 # workers_env gives one NAME=value word or none
  env -u TOKIO_WORKER_THREADS $(workers_env) "$BIN/orderflow-bench" startup --bin "$BIN/$name" --runs 5 --json >"$OUT/startup-$name.json"
done
stop_stack

log "2/9 main run: closed loop, baseline, sweep and saga p99 bisection (tracing default)"
TRACING=default
start_stack
bench --duration "$DURATION" --baseline --sweep --sweep-duration "$SWEEP_DURATION" \
  --svg docs/bench-latency.svg --label main --json "${BENCH_ARGS[@]}" >"$OUT/main.json"
CPU_FILE=$OUT/cpu-main.json
stop_stack

log "3/9 CreateOrder alone: order-service without payment-service (tracing default)"
CREATE_ONLY=1
start_stack
bench --duration "$DURATION" --baseline --label create-only --json "${BENCH_ARGS[@]}" >"$OUT/create-only.json"
CPU_FILE=$OUT/cpu-create-only.json
stop_stack
CREATE_ONLY=0

log "4/9 the reference: a bare CreateOrder handler (orderflow-bench bare-order-server) instead of the services"
BARE=1
start_stack
bench --duration "$DURATION" --baseline --label bare --json "${BENCH_ARGS[@]}" >"$OUT/bare.json"
CPU_FILE=$OUT/cpu-bare.json
stop_stack
BARE=0

log "5/9 tracing off (OTEL_SDK_DISABLED=true)"
TRACING=off
start_stack
bench --duration "$DURATION" --baseline --label tracing-off --json "${BENCH_ARGS[@]}" >"$OUT/tracing-off.json"
CPU_FILE=$OUT/cpu-tracing-off.json
stop_stack

log "6/9 tracing on (OTLP/gRPC export of every span to otlp-sink)"
TRACING=on
start_stack
bench --duration "$DURATION" --baseline --label tracing-on --json "${BENCH_ARGS[@]}" >"$OUT/tracing-on.json"
CPU_FILE=$OUT/cpu-tracing-on.json
stop_services
stop_sink
cp "$LOGS/otlp-sink.json" "$OUT/otlp-sink.json"
CPU_FILE=""
stop_stack

# What the payment deadline costs: the same run as 5/9 (whose services run
# with the default deadline), with no deadline set on new orders.
log "7/9 tracing off, no payment deadline (ORDER_PAYMENT_DEADLINE_SECS=0)"
TRACING=off
export ORDER_PAYMENT_DEADLINE_SECS=0
start_stack
bench --duration "$DURATION" --baseline --label no-deadline --json "${BENCH_ARGS[@]}" >"$OUT/no-deadline.json"
CPU_FILE=$OUT/cpu-no-deadline.json
stop_stack
unset ORDER_PAYMENT_DEADLINE_SECS

# The goal's own measure of the broker's work: every saga of a run counted,
# from an empty stack to the last saga's end (no warm-up, so nothing is in
# flight at either reading), where the windows above count the sagas that
# end in them while a closed loop keeps more in flight than it finishes.
log "8/9 every saga counted: $COUNT_ORDERS orders, closed loop, from an empty stack (tracing off)"
TRACING=off
start_stack
# --by-kind taps the traffic to count the messages by kind; its copies are
# left out of the counts but cost the broker CPU, and this stage's CPU and
# rates are not among the goals.
bench --count "$COUNT_ORDERS" --warmup 0s --by-kind --label count --json "${BENCH_ARGS[@]}" >"$OUT/count.json"
CPU_FILE=$OUT/cpu-count.json
stop_stack

# The same count at a steady rate far below the peak, where few charges run
# at once: every saga counted, by kind.
log "9/9 every saga counted at a steady $STEADY_RATE orders/s: $STEADY_ORDERS orders, open loop (tracing off)"
start_stack
bench --rate "$STEADY_RATE" --count "$STEADY_ORDERS" --warmup 0s --by-kind --label steady --json "${BENCH_ARGS[@]}" >"$OUT/steady.json"
CPU_FILE=$OUT/cpu-steady.json
stop_stack

COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git status --porcelain 2>/dev/null)" ]]; then COMMIT="$COMMIT + uncommitted changes"; fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$OUT" "$COMMIT" "$LOAD_BEFORE" "$LOAD_AFTER" "$WORKERS" <<'EOF'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
load = lambda name: json.loads((out / name).read_text())
main, off, on = load("main.json"), load("tracing-off.json"), load("tracing-on.json")
create_only, bare = load("create-only.json"), load("bare.json")
sink = load("otlp-sink.json")
startup = {n: load(f"startup-{n}.json") for n in ("order-service", "payment-service")}
r = main["ratios"]
print(f"machine: {main['machine']['cpus']} CPU(s), {main['machine']['cpu_model']}; commit {sys.argv[2]}; "
      f"load average before {sys.argv[3]}, after {sys.argv[4]}; worker threads per service: {sys.argv[5]}")
print()
print("| figure | value | ratio to raw publish | goal |")
print("| --- | --- | --- | --- |")
print(f"| raw JetStream acked publish, {main['concurrency']} in flight | {main['baseline_publish_rps']:.0f}/s, p50 {main['baseline_p50_ms']:.2f} ms, p99 {main['baseline_p99_ms']:.2f} ms | 1 | |")
print(f"| CreateOrder throughput | {main['create_rps']:.0f}/s | {r['create_vs_baseline']:.3f} | |")
print(f"| CreateOrder latency p50 / p90 / p99 / p99.9 | {main['create_p50_ms']:.2f} / {main['create_p90_ms']:.2f} / {main['create_p99_ms']:.2f} / {main['create_p999_ms']:.2f} ms | p99 {r['create_p99_vs_baseline_p99']:.2f} | |")
print(f"| completed sagas | {main['saga_rps']:.0f}/s | {r['saga_vs_baseline']:.3f} | >= 0.12 |")
print(f"| saga latency p50 / p90 / p99 / p99.9 | {main['saga_p50_ms']:.2f} / {main['saga_p90_ms']:.2f} / {main['saga_p99_ms']:.2f} / {main['saga_p999_ms']:.2f} ms | p99 {r['saga_p99_vs_baseline_p99']:.2f} | |")
half = main.get("saga_p99_at_half_peak_ms")
print(f"| saga p99 at half of peak (open loop) | {half if half is not None else '-'} ms | | |")
num = lambda v, fmt=".0f": "-" if v is None else format(v, fmt)
slo, slo_fail = main.get("slo_rps"), main.get("slo_fail_rps")
slo_note = ("every rate tried passed: a lower bound" if main.get("slo_bounded") is False
            else f"{num(slo_fail)}/s failed")
print(f"| highest open-loop rate with saga p99 <= {num(main.get('slo_p99_ms'), 'g')} ms (bisected) | {num(slo)}/s ({slo_note}) | "
      f"{num(main.get('slo_ratio'), '.3f')} of the closed-loop saga rate | >= 0.8 |")
c = create_only
print(f"| CreateOrder alone (no payment service), {c['concurrency']} in flight | {c['create_rps']:.0f}/s, p99 {c['create_p99_ms']:.2f} ms | "
      f"{num((c.get('ratios') or {}).get('create_vs_baseline'), '.3f')} | >= 0.30 |")
b = bare
c_ratio, b_ratio = ((x.get("ratios") or {}).get("create_vs_baseline") for x in (c, b))
of_bare = c_ratio / b_ratio if c_ratio and b_ratio else None
print(f"| CreateOrder alone ÷ raw, bare tonic handler (reference), {b['concurrency']} in flight | {b['create_rps']:.0f}/s, p99 {b['create_p99_ms']:.2f} ms "
      f"(its raw publish: {num(b.get('baseline_publish_rps'))}/s; the order service reaches {num(of_bare, '.2f')} of its ratio) | {num(b_ratio, '.3f')} | |")
def broker(report, unit):
    m = report.get(f"broker_msgs_per_{unit}")
    if m is None:
        return "-"
    g = lambda k: report.get(f"broker_{k}_per_{unit}")
    return f"{m:.1f} ({g('in_msgs'):.1f} in, {g('out_msgs'):.1f} out); {g('in_bytes'):.0f} B in, {g('out_bytes'):.0f} B out"
def cpu_text(report, unit, names={}):
    c = report.get(f"cpu_us_per_{unit}") or {}
    return ", ".join(f"{names.get(k, k.replace('_', '-'))} {v:.0f} us" for k, v in c.items()) or "-"
print(f"| broker messages per saga (main run, observer left out) | {broker(main, 'saga')} | | <= 12 msgs, <= 2.5 KB out |")
count = load("count.json")
print(f"| broker messages per saga, every saga of a run counted ({count['sagas_completed']} orders at {count['concurrency']} in flight from an empty stack, tracing off) | {broker(count, 'saga')} | | <= 12 msgs, <= 2.5 KB out |")
steady = load("steady.json")
print(f"| broker messages per saga, every saga of a run counted ({steady['sagas_completed']} orders at {steady['target_rps']:.0f}/s, tracing off) | {broker(steady, 'saga')} | | <= 12 msgs, <= 2.5 KB out |")
def kinds(report):
    k = report.get("broker_msgs_by_kind_per_saga") or {}
    return ", ".join(f"{name.replace('_', ' ')} {v:.3f}" for name, v in k.items() if v) or "-"
print(f"| the same by kind: closed loop / steady | {kinds(count)} / {kinds(steady)} | | |")
print(f"| broker messages per CreateOrder (create-only run) | {broker(create_only, 'create')} | | |")
print(f"| CPU per saga in the window (main run) | {cpu_text(main, 'saga')} | | |")
print(f"| CPU per CreateOrder in the window (create-only run) | {cpu_text(create_only, 'create')} | | |")
print(f"| CPU per CreateOrder, bare handler (reference run) | {cpu_text(bare, 'create', {'order_service': 'bare-order-server'})} | | |")
t_off, t_on = off["create_rps"], on["create_rps"]
s_off, s_on = off["saga_rps"], on["saga_rps"]
print(f"| tracing on / off, CreateOrder | {t_on:.0f} / {t_off:.0f} per s = {t_on / t_off:.3f} (vs raw: {on['ratios']['create_vs_baseline']:.3f} / {off['ratios']['create_vs_baseline']:.3f}) | | |")
print(f"| tracing on / off, sagas | {s_on:.0f} / {s_off:.0f} per s = {s_on / s_off:.3f} (vs raw: {on['ratios']['saga_vs_baseline']:.3f} / {off['ratios']['saga_vs_baseline']:.3f}) | | |")
cpu = {n: load(f"cpu-{n}.json") for n in ("tracing-off", "tracing-on")}
def per_saga(label, report):
    c = cpu[label]
    return 1e6 * (c["order_service_s"] + c["payment_service_s"]) / max(1, report["sagas_observed_total"])
us_off, us_on = per_saga("tracing-off", off), per_saga("tracing-on", on)
sink_us = 1e6 * (cpu["tracing-on"]["otlp_sink_s"] or 0) / max(1, on["sagas_observed_total"])
print(f"| tracing on / off, service CPU per saga | {us_on:.0f} / {us_off:.0f} us = {us_off / us_on:.3f} (+ otlp-sink {sink_us:.0f} us) | | >= 0.90 |")
print(f"| CPU per saga in the window, tracing off / on | {cpu_text(off, 'saga')} / {cpu_text(on, 'saga')} | | <= 60 us each service, tracing off |")
nod = load("no-deadline.json")
if off.get("broker_msgs_per_saga") is not None and nod.get("broker_msgs_per_saga") is not None:
    added = off["broker_msgs_per_saga"] - nod["broker_msgs_per_saga"]
    print(f"| the payment deadline (tracing off, default deadline / none) | broker messages per saga {off['broker_msgs_per_saga']:.2f} / {nod['broker_msgs_per_saga']:.2f} "
          f"(the deadline adds {added:+.2f}); sagas/s {off['saga_rps']:.0f} / {nod['saga_rps']:.0f} = {off['saga_rps'] / nod['saga_rps']:.3f}; "
          f"CPU per saga {cpu_text(off, 'saga')} / {cpu_text(nod, 'saga')} | | |")
for name, s in startup.items():
    print(f"| {name} start to SERVING (median of {len(s['runs'])}) | {s['median_start_to_serving_ms']:.1f} ms | | <= 20 ms |")
    print(f"| {name} idle RSS (median) | {s['median_idle_rss_mib']:.1f} MiB | | <= 12 MB |")
print()
print(f"errors: main {main['errors']}, create-only {create_only['errors']}, bare {bare['errors']}, tracing off {off['errors']}, tracing on {on['errors']}")
print(f"otlp-sink: {sink['spans']} spans in {sink['trace_exports']} exports {sink['spans_by_service']}, {sink['metric_points']} metric points; "
      f"{sink['spans'] / max(1, on['sagas_observed_total']):.1f} spans per saga")
print()
print("sweep:", json.dumps(main["sweep"], indent=None))
print("saga p99 bisection:", json.dumps(main["slo_search"], indent=None))
EOF
log "results in $OUT/*.json, plot in docs/bench-latency.svg"
