# shellcheck shell=bash
# dev/lib.sh: the helpers the dev/ scripts, .ci/run and e2e/*/run share. Sourced, not run:
#
#     # shellcheck source=dev/lib.sh
#     source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#     LOG_TAG=services   # log and die write "[services] ..."
#     DIE_STATUS=2       # die's exit status (1 unless set)
#
# It sets no shell option and defines these variables (and only functions besides):
#   ROOT        the repository, absolute
#   STATE_ROOT  $PARLEY_STATE_DIR, else <repo>/.state: a script's state is STATE_ROOT/<script>
#   CACHE_ROOT  $PARLEY_CACHE_DIR, else ${XDG_CACHE_HOME:-~/.cache}/parley: downloads and
#               builds, kept across clones; a tool's is CACHE_ROOT/<tool>/<version>
#
#   messages   log, die, die_with_tail, need
#   root       as_root, apt_install
#   waiting    wait_until, tcp_port_open, await_ready
#   processes  pidfile_alive, process_alive, process_gone, cmdline_mentions, start_detached,
#              stop_process, stop_pidfile
#   JSON       json_escape, json_str, json_bool
#   files      random_hex, stored_secret, stamp_is
#   builds     require_go, go_download_field, cargo_install_once
#   the repo   shell_scripts, shellcheck_scripts
#
# A pid file here is a file holding one process ID. Every wait polls every 0.2 s and
# discards the output of the command it polls.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC2034 # STATE_ROOT and CACHE_ROOT are for the scripts that source this
{
    STATE_ROOT=${PARLEY_STATE_DIR:-$ROOT/.state}
    CACHE_ROOT=${PARLEY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/parley}
}
LOG_TAG=${LOG_TAG:-dev}
DIE_STATUS=${DIE_STATUS:-1}

# ---------------------------------------------------------------------------------------
# messages (all on stderr: stdout is what a script answers, JSON or a path)

# log MESSAGE...: "[LOG_TAG] MESSAGE".
log() { printf '[%s] %s\n' "$LOG_TAG" "$*" >&2; }

# die MESSAGE...: "[LOG_TAG] error: MESSAGE", then exit with DIE_STATUS.
die() {
    printf '[%s] error: %s\n' "$LOG_TAG" "$*" >&2
    exit "$DIE_STATUS"
}

# die_with_tail LINES FILE MESSAGE...: the last LINES lines of FILE (a log), then die.
die_with_tail() {
    tail -n "$1" "$2" >&2 || true
    shift 2
    die "$@"
}

# need COMMAND WHY: dies "COMMAND is needed (WHY)" unless COMMAND is on PATH.
need() { command -v "$1" >/dev/null || die "$1 is needed ($2)"; }

# ---------------------------------------------------------------------------------------
# root

# as_root COMMAND...: runs COMMAND as root: directly when we are root, else with sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else die "need root to run: $*"
    fi
}

# apt_install PACKAGE...: installs Debian packages (as root) without letting their init
# scripts start system-wide servers on the default ports (a policy-rc.d that refuses, for
# the time of the install, when there is none). The package lists are fetched first when
# there are none, and again when the install fails (stale lists).
apt_install() {
    log "apt-get install $*"
    local policy=/usr/sbin/policy-rc.d created='' rc=0
    if [ ! -e "$policy" ]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' >$policy && chmod 755 $policy"
        created=1
    fi
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        apt_update || rc=$?
    fi
    if [ "$rc" -eq 0 ] && ! apt_get_install "$@"; then
        { apt_update && apt_get_install "$@"; } || rc=$?
    fi
    [ -z "$created" ] || as_root rm -f "$policy"
    [ "$rc" -eq 0 ] || die "apt-get install $* failed"
}

apt_update() {
    log "apt-get update"
    as_root apt-get update -qq -o DPkg::Lock::Timeout=600 >/dev/null
}

apt_get_install() {
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=600 "$@" >/dev/null
}

# ---------------------------------------------------------------------------------------
# waiting

# wait_until SECONDS COMMAND...: runs COMMAND until it succeeds; false when SECONDS pass
# first.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

# tcp_port_open ADDRESS PORT: whether something accepts TCP connections there.
tcp_port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# await_ready SECONDS LABEL PIDFILE LOGFILE COMMAND...: runs COMMAND (a readiness probe)
# until it succeeds, as long as the process PIDFILE names runs; dies, after the last 20
# lines of LOGFILE, when that process exits ("LABEL exited") or SECONDS pass ("LABEL not
# ready after SECONDSs").
await_ready() {
    local seconds=$1 label=$2 pidfile=$3 logfile=$4
    shift 4
    local deadline=$((SECONDS + seconds)) pid
    until "$@" >/dev/null 2>&1; do
        pid=$(cat "$pidfile" 2>/dev/null) || pid=
        if [ -z "$pid" ] || process_gone "$pid"; then
            die_with_tail 20 "$logfile" "$label exited (log: $logfile)"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            die_with_tail 20 "$logfile" "$label not ready after ${seconds}s (log: $logfile)"
        fi
        sleep 0.2
    done
}

# ---------------------------------------------------------------------------------------
# processes

# pidfile_alive PIDFILE: PIDFILE exists and names a process we may signal (kill -0: a
# zombie counts as alive).
pidfile_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# process_alive PID: whether PID is a live process; a zombie (exited, not yet reaped by
# whoever inherited it) is not.
process_alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}
process_gone() { ! process_alive "$1"; }

# cmdline_mentions PID TEXT: whether PID's command line contains TEXT (guards against a
# recycled pid: our processes name a file of ours).
cmdline_mentions() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2"; }

# start_detached PIDFILE LOGFILE COMMAND...: starts COMMAND in the background in a session
# of its own (a terminal's signals do not reach it), stdin from /dev/null, stdout and stderr
# to LOGFILE (the previous one kept as LOGFILE.1), the lock descriptors 8 and 9 closed (it
# must not hold its starter's locks). The process writes its own pid to PIDFILE before it
# execs COMMAND; false when PIDFILE has not appeared after 5 s.
start_detached() {
    local pidfile=$1 logfile=$2
    shift 2
    [ ! -f "$logfile" ] || mv -f "$logfile" "$logfile.1"
    rm -f "$pidfile"
    # shellcheck disable=SC2016 # $$ and "$@" are the child shell's, single quotes on purpose
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" >"$logfile" 2>&1 </dev/null 8>&- 9>&- &
    wait_until 5 test -s "$pidfile"
}

# stop_process PID SECONDS LABEL: sends TERM, and KILL when PID is still there after
# SECONDS (saying so); false when it has not gone 5 s after KILL.
stop_process() {
    local pid=$1 seconds=$2 label=$3
    kill -TERM "$pid" 2>/dev/null || true
    wait_until "$seconds" process_gone "$pid" && return 0
    log "$label (pid $pid) ignored TERM for ${seconds}s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    wait_until 5 process_gone "$pid"
}

# stop_pidfile PIDFILE SECONDS LABEL: stop_process on the process PIDFILE names, if it runs
# (one that outlives KILL is left); removes PIDFILE.
stop_pidfile() {
    if pidfile_alive "$1"; then
        stop_process "$(cat "$1")" "$2" "$3" || true
    fi
    rm -f "$1"
}

# ---------------------------------------------------------------------------------------
# JSON

# json_escape TEXT: TEXT with its backslashes and double quotes escaped, unquoted.
json_escape() {
    local s=${1//\\/\\\\}
    printf '%s' "${s//\"/\\\"}"
}

# json_str TEXT: TEXT as a JSON string, quoted.
json_str() { printf '"%s"' "$(json_escape "$1")"; }

# json_bool COMMAND...: true when COMMAND succeeds (its output discarded), else false.
json_bool() { if "$@" >/dev/null 2>&1; then echo true; else echo false; fi; }

# ---------------------------------------------------------------------------------------
# files

# random_hex BYTES: BYTES random bytes as lowercase hex digits, no newline.
random_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

# stored_secret FILE BYTES: the secret in FILE; the first time, BYTES random bytes as hex,
# written there readable by us only.
stored_secret() {
    if [ ! -s "$1" ]; then
        mkdir -p "$(dirname "$1")"
        (umask 077 && random_hex "$2" >"$1")
    fi
    cat "$1"
}

# stamp_is FILE TEXT: whether FILE (a build's stamp) holds TEXT.
stamp_is() { [ "$(cat "$1" 2>/dev/null)" = "$2" ]; }

# ---------------------------------------------------------------------------------------
# builds

# require_go MINOR PURPOSE NEEDED_FOR: dies unless `go` is Go 1.MINOR or newer (the local
# toolchain, no download): "go is needed (PURPOSE: install Go 1.MINOR or newer)", or "Go
# 1.MINOR or newer is needed (NEEDED_FOR); found goX.Y".
require_go() {
    local min=$1 purpose=$2 needed_for=$3 version minor
    need go "$purpose: install Go 1.$min or newer"
    version=$(GOTOOLCHAIN=local go env GOVERSION 2>/dev/null) || die "go env GOVERSION failed"
    minor=$(echo "$version" | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
    if [ -z "$minor" ] || [ "$minor" -lt "$min" ]; then
        die "Go 1.$min or newer is needed ($needed_for); found $version"
    fi
}

# go_download_field DIR MODULE@VERSION FIELD: a field (GoMod, Dir, Info: paths in the module
# cache) of `go mod download -json`, run in DIR (a directory of our own, so that no go.mod
# or go.work around the caller interferes).
go_download_field() {
    local out
    out=$(cd "$1" && GOFLAGS='' go mod download -json "$2") \
        || die "go mod download $2 failed: $(echo "$out" | sed -n 's/.*"Error": "\(.*\)".*/\1/p')"
    echo "$out" | sed -n "s/^[[:space:]]*\"$3\": \"\(.*\)\",\{0,1\}\$/\1/p"
}

# cargo_install_once CRATE VERSION DIR STAMP: `cargo install --locked` CRATE@VERSION from
# crates.io into DIR (binary DIR/bin/CRATE), unless DIR/.CRATE.stamp already holds STAMP
# (VERSION and the caller's recipe number) and the binary is there. Log: DIR/build.log.
cargo_install_once() {
    local crate=$1 version=$2 dir=$3 stamp=$4
    if stamp_is "$dir/.$crate.stamp" "$stamp" && [ -x "$dir/bin/$crate" ]; then
        return 0
    fi
    log "building $crate $version from crates.io (once)"
    local t0=$SECONDS
    mkdir -p "$dir"
    (cd "$dir" && cargo install "$crate" --version "$version" --locked \
        --root "$dir" --target-dir "$dir/build") >"$dir/build.log" 2>&1 \
        || die_with_tail 30 "$dir/build.log" "cargo install $crate@$version failed (log: $dir/build.log)"
    rm -rf "$dir/build"
    echo "$stamp" >"$dir/.$crate.stamp"
    log "built $crate $version in $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------------------------------
# the repository

# shell_scripts: the repository's shell scripts, relative to ROOT, one a line: the files
# git tracks or would track (not ignored) that end in .sh or start with a sh or bash
# shebang. Outside a git checkout, every such file but under .git, .state, target and
# node_modules.
shell_scripts() {
    local file first
    {
        if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
            git -C "$ROOT" ls-files -z --cached --others --exclude-standard
        else
            (cd "$ROOT" && find . \( -name .git -o -name .state -o -name target -o -name node_modules \) \
                -prune -o -type f -print0 | sed -z 's|^\./||')
        fi
    } | while IFS= read -r -d '' file; do
        [ -f "$ROOT/$file" ] || continue
        case $file in
            *.sh) echo "$file"; continue ;;
        esac
        first=
        IFS= read -r first <"$ROOT/$file" 2>/dev/null || true
        case $first in
            '#!'*[/\ ]bash | '#!'*[/\ ]bash\ * | '#!'*[/\ ]sh | '#!'*[/\ ]sh\ *) echo "$file" ;;
        esac
    done | sort -u
}

# Usage: shellcheck_scripts. Runs shellcheck (on PATH) on every one of shell_scripts, with
# the settings of <repo>/.shellcheckrc; says how many passed, or fails with the findings.
shellcheck_scripts() {
    local scripts
    mapfile -t scripts < <(shell_scripts)
    (cd "$ROOT" && shellcheck "${scripts[@]}") || return
    log "shellcheck: ${#scripts[@]} scripts, no findings"
}
