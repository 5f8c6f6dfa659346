#!/usr/bin/env bash
# Builds the HDFS test cluster (tests/hdfs: Hadoop's MiniDFSCluster, a real
# NameNode and DataNodes in one JVM) and, with `start`, runs it in the
# background until `stop`.
#
#   bash tests/hdfs/cluster.sh build              # mvn package (cached); exit 77 if Maven Central is unreachable
#   bash tests/hdfs/cluster.sh start DIR [--ha]   # starts it under DIR, waits for READY
#   bash tests/hdfs/cluster.sh start DIR --bind ADDR   # NameNode and DataNodes on ADDR, not 127.0.0.1
#   bash tests/hdfs/cluster.sh cmd DIR 'stop-datanode 1'   # one control command, prints the answer
#   bash tests/hdfs/cluster.sh stop DIR
#
# `start` leaves in DIR: conf/ (core-site.xml, hdfs-site.xml: point
# HADOOP_CONF_DIR there), uri (hdfs://127.0.0.1:PORT, hdfs://ADDR:PORT with
# --bind, hdfs://minidfs-ns with --ha), pid, log (Hadoop's output), and the
# control pipe. The commands are listed in src/main/java/hlfs/MiniCluster.java.
# --bind ADDR (an address of this host, e.g. tests/lib/netns.sh's NETNS_GW)
# serves clients in other network namespaces; not with --ha.
#
# Env: HLFS_CACHE (default /var/cache/hlfs-build): the Maven repository is
#      $HLFS_CACHE/m2, the built jar and classpath $HLFS_CACHE/minidfs-<hash>/.
#      HLFS_HDFS_DATANODES (default 4).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${HLFS_CACHE:-/var/cache/hlfs-build}
say() { echo "[hdfs-cluster] $*" >&2; }

build_dir() {
    local h
    h=$(cat "$HERE/pom.xml" "$HERE"/src/main/java/hlfs/*.java | sha256sum | cut -c1-16)
    echo "$CACHE/minidfs-$h"
}

build() {
    local out
    out=$(build_dir)
    if [ -s "$out/classpath.txt" ] && [ -s "$out/classes.jar" ]; then
        echo "$out"
        return 0
    fi
    command -v mvn >/dev/null && command -v java >/dev/null || {
        say "mvn and java are needed (apt-get install maven openjdk-17-jdk-headless)"
        return 1
    }
    mkdir -p "$CACHE/m2"
    local work
    work=$(mktemp -d)
    cp -r "$HERE/pom.xml" "$HERE/src" "$work/"
    say "building with Maven (first time: downloads Hadoop's jars into $CACHE/m2)"
    if ! mvn -B -q -Dmaven.repo.local="$CACHE/m2" -f "$work/pom.xml" package \
        >"$work/mvn.log" 2>&1; then
        if grep -qiE "Could not transfer|Unknown host|Connection refused|Network is unreachable|could not resolve" "$work/mvn.log"; then
            tail -5 "$work/mvn.log" >&2
            say "Maven Central cannot be reached: the HDFS cluster is not available"
            rm -rf "$work"
            return 77
        fi
        tail -30 "$work/mvn.log" >&2
        say "the Maven build failed (log above)"
        rm -rf "$work"
        return 1
    fi
    mkdir -p "$out.tmp"
    cp "$work/target/classpath.txt" "$out.tmp/"
    cp "$work"/target/hlfs-minidfs-*.jar "$out.tmp/classes.jar"
    rm -rf "$out" "$work"
    mv "$out.tmp" "$out"
    echo "$out"
}

start() {
    local dir=$1
    shift
    local out
    out=$(build) || return $?
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    rm -rf "$dir/data" "$dir/conf" "$dir/uri" "$dir/answers"
    mkfifo "$dir/ctl" 2>/dev/null || [ -p "$dir/ctl" ]
    : >"$dir/answers"
    # The JVM reads commands from the pipe; a holder keeps the pipe open
    # between commands, so the cluster runs until `stop` (or the holder dies).
    (
        exec 3<>"$dir/ctl"
        exec java -Xmx1g -cp "$out/classes.jar:$(cat "$out/classpath.txt")" hlfs.MiniCluster \
            --dir "$dir/data" --conf "$dir/conf" \
            --datanodes "${HLFS_HDFS_DATANODES:-4}" "$@" <&3 >>"$dir/answers" 2>"$dir/log"
    ) &
    echo $! >"$dir/pid"
    local i
    for i in $(seq 1 240); do
        if grep -q '^READY ' "$dir/answers"; then
            sed -n 's/^READY //p' "$dir/answers" | head -1 >"$dir/uri"
            say "ready: $(cat "$dir/uri") (HADOOP_CONF_DIR=$dir/conf, log $dir/log)"
            return 0
        fi
        if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
            tail -30 "$dir/log" >&2
            say "the cluster exited before it was ready (log above)"
            return 1
        fi
        sleep 0.5
    done
    tail -30 "$dir/log" >&2
    say "the cluster was not ready within 120 s"
    stop "$dir"
    return 1
}

# One command; prints its answer; fails if the answer is an error.
cmd() {
    local dir=$1 line=$2
    local before i
    before=$(wc -l <"$dir/answers")
    printf '%s\n' "$line" >"$dir/ctl"
    for i in $(seq 1 1200); do
        if [ "$(wc -l <"$dir/answers")" -gt "$before" ]; then
            local ans
            ans=$(sed -n "$((before + 1))p" "$dir/answers")
            echo "$ans"
            [[ $ans == ok* ]]
            return
        fi
        sleep 0.1
    done
    say "no answer to '$line' within 120 s"
    return 1
}

stop() {
    local dir=$1
    [ -f "$dir/pid" ] || return 0
    local pid
    pid=$(cat "$dir/pid")
    if kill -0 "$pid" 2>/dev/null; then
        printf 'shutdown\n' >"$dir/ctl" || true
        local i
        for i in $(seq 1 60); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/pid"
}

case ${1:-} in
    build) build >/dev/null ;;
    start) shift; start "$@" ;;
    cmd) shift; cmd "$@" ;;
    stop) shift; stop "$@" ;;
    *) sed -n '2,21p' "$0" >&2; exit 2 ;;
esac
