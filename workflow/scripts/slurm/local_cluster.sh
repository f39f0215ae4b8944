#!/usr/bin/env bash
# A throwaway single-host SLURM cluster with accounting, for `make cluster-check` (CI runs it as root):
#
#   workflow/scripts/slurm/local_cluster.sh start   # apt-get install (once), then munged, mariadbd, slurmdbd,
#                                                   # slurmctld and the slurmd's, started directly (no systemd)
#   workflow/scripts/slurm/local_cluster.sh stop    # stops every daemon it started; the installed packages stay
#   workflow/scripts/slurm/local_cluster.sh status
#
# Pid, log, state and database files live in $SPARK_SLURM_DIR (default /tmp/spark-repro-slurm), the configs too
# (rendered from the *.in templates beside this script). Clients find the config at the default path, so `start`
# links /etc/slurm/slurm.conf to it (`stop` removes that link; a slurm.conf of the machine's own is never touched:
# `start` refuses). Munge keeps Debian's key and socket (/etc/munge, /run/munge).
#
# Five nodes:
#   - the smoke node, named like this host: its memory and twice its cores; every one-node job of the smoke DAG
#     runs there;
#   - `paper` and `paper[1-3]`: four nodes of the paper's cluster (96 cores, 1 TB, 8 GPUs each), declared larger
#     than the host (SlurmdParameters=config_overrides) with their GPUs backed by empty files (gres.conf), for
#     `sbatch --test-only` of the paper preset's jobs, one node or four. Each has a slurmd of its own
#     (`slurmd -N NAME` on its own port) so that SLURM sees it as a working, idle node (a drained or down node fails
#     every test-only request). `paper` also takes the second rank of the smoke DAG's 2-node pretraining (on this
#     same host; it asks for no GPUs).
#     All nodes are in both partitions (cpu, gpu: the profile's); jobs say where they run
#     (`sbatch --nodelist=...`: cluster_check.py's slurm_extra), as cluster_check.py does.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
DIR=${SPARK_SLURM_DIR:-/tmp/spark-repro-slurm}
CLUSTER=${SPARK_SLURM_CLUSTER:-sparkrepro}
CTLD_PORT=${SPARK_SLURM_PORT_BASE:-6917}  # slurmctld; slurmd +1, paper slurmd +2, slurmdbd +3, MariaDB +4,
                                          # paper1-3 slurmd +5..+7
SLURMD_PORT=$((CTLD_PORT + 1))
PAPER_PORT=$((CTLD_PORT + 2))
DBD_PORT=$((CTLD_PORT + 3))
DB_PORT=$((CTLD_PORT + 4))
PAPER_NODES=(paper paper1 paper2 paper3)
HOST=$(hostname -s)
ETC=$DIR/etc
SYSTEM_CONF=/etc/slurm/slurm.conf
export SLURM_CONF=$ETC/slurm.conf
PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)

log() { echo "local_cluster: $*" >&2; }
die() { log "$*"; exit 1; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND until it succeeds
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out waiting for $what (logs: $DIR/log)"
        sleep 0.2
    done
}

running() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

install_packages() {
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    [[ $(id -u) == 0 ]] || die "needs root to install ${missing[*]} (apt-get)"
    log "installing ${missing[*]}"
    apt-get update -qq
    # policy-rc.d-less containers: the packages' postinst would try to start the daemons; they cannot (no
    # systemd) and we start our own anyway.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

render() {  # render TEMPLATE OUT: fill in the @NAME@ fields
    local paper_node="NodeName=paper NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$PAPER_PORT CPUs=96"
    paper_node+=" RealMemory=1000000 Gres=gpu:8 State=UNKNOWN\\n"
    local i
    for i in 1 2 3; do
        paper_node+="NodeName=paper$i NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$((DB_PORT + i)) CPUs=96"
        paper_node+=" RealMemory=1000000 Gres=gpu:8 State=UNKNOWN\\n"
    done
    sed -e "s|@DIR@|$DIR|g" -e "s|@CLUSTER@|$CLUSTER|g" -e "s|@HOST@|$HOST|g" \
        -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" -e "s|@DBD_PORT@|$DBD_PORT|g" \
        -e "s|@DB_PORT@|$DB_PORT|g" -e "s|@DB_PASS@|$(cat "$DIR/db/.password")|g" \
        -e "s|@CPUS@|$((2 * $(nproc)))|g" \
        -e "s|@MEM_MB@|$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024))|g" \
        -e "s|@PAPER_NODE@|$paper_node|g" \
        "$1" >"$2"
}

configure() {
    mkdir -p "$DIR"/{etc,log,run,state,spool,fakegpu,munge,db,db-run}
    chmod 755 "$DIR"  # munged and mariadbd run as their own users
    if [[ ! -s $DIR/db/.password ]]; then
        (umask 077 && head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/db/.password")
    fi
    render "$HERE/slurm.conf.in" "$ETC/slurm.conf"
    render "$HERE/gres.conf.in" "$ETC/gres.conf"
    (umask 077 && render "$HERE/slurmdbd.conf.in" "$ETC/slurmdbd.conf")
    touch "$DIR"/fakegpu/nvidia{0..7}
    chown munge:munge "$DIR/munge" && chmod 700 "$DIR/munge"
    chown mysql:mysql "$DIR/db-run"
    if [[ -L $SYSTEM_CONF ]] && [[ $(readlink "$SYSTEM_CONF") == "$ETC/slurm.conf" ]]; then
        :
    elif [[ -e $SYSTEM_CONF || -L $SYSTEM_CONF ]]; then
        die "$SYSTEM_CONF exists and is not ours: this script is for machines without a SLURM of their own"
    else
        mkdir -p /etc/slurm && ln -s "$ETC/slurm.conf" "$SYSTEM_CONF"
    fi
}

start_munge() {
    running "$DIR/munge/munged.pid" && return
    install -d -o munge -g munge -m 755 /run/munge
    runuser -u munge -- /usr/sbin/munged --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
        --seed-file="$DIR/munge/munged.seed"
    wait_for 20 munged munge -n
}

start_mariadb() {
    local sock=$DIR/db-run/mysqld.sock
    if ! running "$DIR/db-run/mariadbd.pid"; then
        if [[ ! -d $DIR/db/mysql ]]; then
            chown mysql:mysql "$DIR/db"
            mariadb-install-db --no-defaults --user=mysql --datadir="$DIR/db" --auth-root-authentication-method=socket \
                --skip-test-db >"$DIR/log/mariadb-install-db.log" 2>&1 || die "mariadb-install-db failed: $DIR/log"
        fi
        setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$DIR/db" --socket="$sock" \
            --pid-file="$DIR/db-run/mariadbd.pid" --log-error="$DIR/log/mariadbd.log" --port="$DB_PORT" \
            --bind-address=127.0.0.1 --skip-name-resolve --innodb-buffer-pool-size=64M </dev/null >/dev/null 2>&1 &
        wait_for 60 mariadbd mariadb --no-defaults --socket="$sock" -e "SELECT 1"
    fi
    mariadb --no-defaults --socket="$sock" <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$(cat "$DIR/db/.password")';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL
}

start_slurmdbd() {
    running "$DIR/run/slurmdbd.pid" && return
    /usr/sbin/slurmdbd
    wait_for 60 slurmdbd sacctmgr -n list cluster
    if [[ -z $(sacctmgr -n list cluster "$CLUSTER" format=cluster) ]]; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
}

start_slurm() {
    running "$DIR/run/slurmctld.pid" || /usr/sbin/slurmctld
    wait_for 60 slurmctld scontrol ping
    running "$DIR/run/slurmd-$HOST.pid" || /usr/sbin/slurmd
    local node
    for node in "${PAPER_NODES[@]}"; do
        running "$DIR/run/slurmd-$node.pid" || /usr/sbin/slurmd -N "$node"
    done
    # All registered (no '*': not responding), and a node left DOWN or DRAINED by an earlier run comes back.
    wait_for 60 "the nodes to register" bash -c "! sinfo -h -N -o '%N %T' | grep -Eq 'unk|\*$'"
    for node in "$HOST" "${PAPER_NODES[@]}"; do
        sinfo -h -n "$node" -o %T | grep -Eq '^(idle|mixed|allocated)$' || scontrol update nodename="$node" state=resume
    done
    wait_for 60 "the nodes to be up" bash -c "! sinfo -h -N -o %T | grep -Evqx 'idle|mixed|allocated|completing'"
}

start() {
    install_packages
    configure
    start_munge
    start_mariadb
    start_slurmdbd
    start_slurm
    log "up: $(sinfo -h -N -o '%N:%P:%T' | tr '\n' ' ')(SLURM_CONF=$SLURM_CONF)"
}

stop_pidfiles() {  # stop_pidfiles PIDFILE...: SIGTERM to each, then wait until all are gone (SIGKILL after 30 s)
    local pidfile pid pids=()
    for pidfile; do
        if running "$pidfile"; then
            pids+=("$(cat "$pidfile")")
            kill -TERM "${pids[-1]}" 2>/dev/null || true
        fi
    done
    local deadline=$((SECONDS + 30)) alive
    while ((SECONDS < deadline)); do
        alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            log "pid $pid did not stop in 30 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    rm -f "$@"
}

stop() {
    if [[ -d $DIR ]]; then
        # Jobs still running would outlive their slurmd (proctrack/linuxproc): cancel them first.
        if running "$DIR/run/slurmctld.pid"; then
            scancel --full --quiet --user=root 2>/dev/null || true
        fi
        # Three waves, each daemon before what it reports to: SLURM, its accounting, the database and munge.
        local node pidfiles=()
        for node in "${PAPER_NODES[@]}" "$HOST"; do pidfiles+=("$DIR/run/slurmd-$node.pid"); done
        stop_pidfiles "${pidfiles[@]}" "$DIR/run/slurmctld.pid"
        stop_pidfiles "$DIR/run/slurmdbd.pid"
        stop_pidfiles "$DIR/db-run/mariadbd.pid" "$DIR/munge/munged.pid"
    fi
    if [[ -L $SYSTEM_CONF ]] && [[ $(readlink "$SYSTEM_CONF") == "$ETC/slurm.conf" ]]; then
        rm -f "$SYSTEM_CONF"
    fi
    log "stopped"
}

status() {
    local name pidfile rc=0
    for name in munged:munge/munged.pid mariadbd:db-run/mariadbd.pid slurmdbd:run/slurmdbd.pid \
        slurmctld:run/slurmctld.pid "slurmd:run/slurmd-$HOST.pid" slurmd-paper:run/slurmd-paper.pid \
        slurmd-paper1:run/slurmd-paper1.pid slurmd-paper2:run/slurmd-paper2.pid slurmd-paper3:run/slurmd-paper3.pid; do
        pidfile=$DIR/${name#*:}
        if running "$pidfile"; then
            echo "${name%%:*}: running ($(cat "$pidfile"))"
        else
            echo "${name%%:*}: stopped"
            rc=1
        fi
    done
    return $rc
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) die "usage: $0 start|stop|status" ;;
esac
