# Shared by dev/up, dev/status and dev/down: a local distributed Parley cluster (chat-nodes
# and persisters) over the services of dev/services. Sourced, not run.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER_STATE=${PARLEY_STATE_DIR:-$ROOT/.state}/cluster
BIN=${PARLEY_CHAT_NODE_BIN:-$ROOT/target/debug/chat-node}
NODE_PORT_BASE=${PARLEY_NODE_PORT_BASE:-8080}          # node i: 8080+i (8081, 8082, ...)
INTERNAL_PORT_BASE=${PARLEY_INTERNAL_PORT_BASE:-9180}  # node i: 9180+i
PERSISTER_PORT_BASE=${PARLEY_PERSISTER_PORT_BASE:-8090}

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] error: %s\n' "$*" >&2; exit 1; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

cluster_secret() {
    local file="$CLUSTER_STATE/$1"
    if [ ! -s "$file" ]; then
        mkdir -p "$CLUSTER_STATE"
        od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$file"
        chmod 600 "$file"
    fi
    cat "$file"
}

# Every PARLEY_* variable a node or persister of this cluster needs (but its own name and
# ports).
cluster_env() {
    eval "$("$ROOT/dev/services" env)"
    export PARLEY_MODE=distributed
    export PARLEY_KAFKA_TOPIC_PREFIX=${PARLEY_KAFKA_TOPIC_PREFIX:-dev}
    export PARLEY_JWT_SECRET=${PARLEY_JWT_SECRET:-$(cluster_secret jwt-secret)}
    export PARLEY_CLUSTER_SECRET=${PARLEY_CLUSTER_SECRET:-$(cluster_secret cluster-secret)}
}

node_count() { cat "$CLUSTER_STATE/nodes" 2>/dev/null || echo 0; }
persister_count() { cat "$CLUSTER_STATE/persisters" 2>/dev/null || echo 0; }

stop_pidfile() {
    local pidfile=$1
    pid_alive "$pidfile" || { rm -f "$pidfile"; return 0; }
    local pid; pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}
