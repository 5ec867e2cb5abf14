# shellcheck shell=bash
# Shared by dev/up, dev/status and dev/down: a local distributed Parley cluster (chat-nodes
# and persisters) over the services of dev/services. Sourced, not run; it sources dev/lib.sh.

# shellcheck source=dev/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG=cluster

CLUSTER_STATE=$STATE_ROOT/cluster
# shellcheck disable=SC2034 # used by dev/up, dev/status and dev/down, which source this
{
    CHAT_NODE_BIN=${PARLEY_CHAT_NODE_BIN:-$ROOT/target/debug/chat-node}
    NODE_PORT_BASE=${PARLEY_NODE_PORT_BASE:-8080}          # node i: 8080+i (8081, 8082, ...)
    INTERNAL_PORT_BASE=${PARLEY_INTERNAL_PORT_BASE:-9180}  # node i: 9180+i
    PERSISTER_PORT_BASE=${PARLEY_PERSISTER_PORT_BASE:-8090}
}

# cluster_secret NAME: a secret shared by the cluster's processes (32 random bytes as hex),
# made once per state directory.
cluster_secret() { stored_secret "$CLUSTER_STATE/$1" 32; }

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
