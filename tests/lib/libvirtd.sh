# shellcheck shell=bash
# A private libvirtd from our patched libvirt build, for tests that talk to
# it through a client library (tests/e2e/libvirt_clients.sh). Sourced, not
# run. Modelled on libvirt-pool/smoke.sh, plus isolation:
#
#   . tests/lib/libvirtd.sh
#   libvirtd_start PREFIX HLFS_CLI   # PREFIX from libvirt-pool/build.sh; call it in
#                                    # the script's shell, not in $(...) or a pipeline
#   ... "$PREFIX/bin/virsh" -c "$HLFS_LIBVIRT_URI" ...
#   libvirtd_stop                    # also runs on EXIT (chained to any trap)
#   py=$(libvirt_python_venv PREFIX) # python with libvirt-python built against PREFIX
#
# libvirtd_start exports
#   HLFS_LIBVIRT_URI    qemu+unix:///system?socket=<dir>/run/libvirt-sock
#   LIBVIRTD_DIR        its temporary directory (config, socket, log, pid file)
#   LIBVIRTD_LOG        its log file (log_outputs, level 3 = warnings)
#   LIBVIRTD_PID        its process id
#
# Isolation: libvirtd in system mode keeps driver pid files in /run/libvirt
# (two daemons cannot run at once) and pool definitions in PREFIX/etc (they
# would outlive the test). When `unshare` works, the daemon runs in its own
# mount namespace where /run/libvirt, PREFIX/etc/libvirt and PREFIX/var are
# bind mounts of fresh directories under LIBVIRTD_DIR: it neither sees nor
# leaves anything behind, and runs next to smoke.sh or another test's daemon.
# Without unshare it runs like smoke.sh does (and says so).

LIBVIRTD_PID=""
LIBVIRTD_DIR=""

_lvd_log() { printf '[libvirtd] %s\n' "$*" >&2; }

# libvirtd_start PREFIX HLFS_CLI
libvirtd_start() {
    local prefix=$1 cli=$2 dir
    [ -x "$prefix/sbin/libvirtd" ] || { _lvd_log "error: no libvirtd in $prefix (run libvirt-pool/build.sh)"; return 1; }
    [ -x "$cli" ] || { _lvd_log "error: no hlfs CLI at $cli (cargo build --release -p hlfs-cli)"; return 1; }
    [ -z "$LIBVIRTD_PID" ] || { _lvd_log "error: a private libvirtd is already running ($LIBVIRTD_PID)"; return 1; }

    dir=$(mktemp -d "${TMPDIR:-/tmp}/hlfs-libvirtd.XXXXXX")
    LIBVIRTD_DIR=$dir
    LIBVIRTD_PREFIX=$prefix
    LIBVIRTD_LOG=$dir/libvirtd.log
    mkdir -p "$dir/run" "$dir/etc/storage/autostart" "$dir/etc/qemu/autostart" \
        "$dir/etc/secrets" "$dir/run-libvirt" "$dir/var"
    # The prefix's own configuration files, but no pool/domain/secret definitions.
    cp -p "$prefix"/etc/libvirt/*.conf "$dir/etc/"
    cp -a "$prefix/var/." "$dir/var/"
    cat >"$dir/libvirtd.conf" <<EOF
unix_sock_dir = "$dir/run"
log_outputs = "3:file:$dir/libvirtd.log"
EOF
    _libvirtd_chain_trap

    local isolate=1
    mkdir -p /run/libvirt
    if ! unshare --mount --propagation private true 2>/dev/null; then
        isolate=0
        _lvd_log "warning: unshare --mount does not work here; libvirtd uses /run/libvirt and $prefix/etc directly"
    fi
    # setpriv --pdeathsig: the daemon gets SIGTERM when this shell dies,
    # even by SIGKILL (no EXIT trap then), so it never outlives the test.
    local guard=()
    setpriv --pdeathsig TERM true 2>/dev/null && guard=(setpriv --pdeathsig TERM)
    if [ $isolate = 1 ]; then
        # unshare execs (setpriv and) bash, which execs libvirtd: $! is the daemon.
        # shellcheck disable=SC2016 # expanded by the inner bash
        HLFS_CLI=$cli unshare --mount --propagation private -- "${guard[@]}" bash -c '
            set -e
            mount --bind "$1/run-libvirt" /run/libvirt
            mount --bind "$1/etc" "$2/etc/libvirt"
            mount --bind "$1/var" "$2/var"
            exec "$2/sbin/libvirtd" -f "$1/libvirtd.conf" -p "$1/libvirtd.pid"
        ' libvirtd "$dir" "$prefix" >"$dir/libvirtd.out" 2>&1 &
    else
        HLFS_CLI=$cli "${guard[@]}" "$prefix/sbin/libvirtd" -f "$dir/libvirtd.conf" -p "$dir/libvirtd.pid" \
            >"$dir/libvirtd.out" 2>&1 &
    fi
    LIBVIRTD_PID=$!
    export HLFS_LIBVIRT_URI="qemu+unix:///system?socket=$dir/run/libvirt-sock"
    export LIBVIRTD_DIR LIBVIRTD_LOG LIBVIRTD_PID

    # Ready when a client call succeeds (the socket appears before the
    # drivers are initialised; clients wait for them).
    local _i
    for _i in $(seq 150); do
        if ! kill -0 "$LIBVIRTD_PID" 2>/dev/null; then
            _lvd_log "error: libvirtd exited during start-up:"
            cat "$dir/libvirtd.out" "$LIBVIRTD_LOG" >&2 2>/dev/null
            LIBVIRTD_PID=""
            return 1
        fi
        if [ -S "$dir/run/libvirt-sock" ] &&
            "$prefix/bin/virsh" -q -c "$HLFS_LIBVIRT_URI" pool-list --all >/dev/null 2>&1; then
            _lvd_log "libvirtd $LIBVIRTD_PID up (isolated=$isolate): $HLFS_LIBVIRT_URI"
            echo "isolated=$isolate" >"$dir/isolated"
            return 0
        fi
        sleep 0.2
    done
    _lvd_log "error: libvirtd did not answer within 30 s:"
    cat "$dir/libvirtd.out" "$LIBVIRTD_LOG" >&2 2>/dev/null
    return 1
}

# libvirtd_var_dir: where the running daemon's PREFIX/var is, as seen from
# outside its mount namespace (QEMU logs are under log/libvirt/qemu/).
libvirtd_var_dir() {
    if [ -n "$LIBVIRTD_DIR" ] && [ -n "$(ls -A "$LIBVIRTD_DIR/var" 2>/dev/null)" ] &&
        grep -q "isolated=1" "$LIBVIRTD_DIR/isolated" 2>/dev/null; then
        echo "$LIBVIRTD_DIR/var"
    else
        echo "$LIBVIRTD_PREFIX/var"
    fi
}

# libvirtd_stop: stops the daemon started by libvirtd_start, removes its
# directory (kept, with the log, when HLFS_KEEP_WORK is set).
libvirtd_stop() {
    if [ -n "$LIBVIRTD_PID" ]; then
        kill "$LIBVIRTD_PID" 2>/dev/null || true
        local _i
        for _i in $(seq 50); do
            kill -0 "$LIBVIRTD_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$LIBVIRTD_PID" 2>/dev/null || true
        wait "$LIBVIRTD_PID" 2>/dev/null || true
        LIBVIRTD_PID=""
    fi
    if [ -n "$LIBVIRTD_DIR" ]; then
        if [ -n "${HLFS_KEEP_WORK:-}" ]; then
            _lvd_log "keeping $LIBVIRTD_DIR (HLFS_KEEP_WORK set)"
        else
            rm -rf -- "$LIBVIRTD_DIR"
        fi
        LIBVIRTD_DIR=""
    fi
}

# Runs libvirtd_stop on EXIT after whatever EXIT trap the caller has set.
_libvirtd_chain_trap() {
    local prev
    prev=$(trap -p EXIT)
    case $prev in
        *libvirtd_stop*) return 0 ;;
    esac
    if [ -n "$prev" ]; then
        local -a parts
        eval "parts=($prev)" # trap -- 'CMD' EXIT
        # shellcheck disable=SC2064 # the previous command is fixed now
        trap "${parts[2]}; libvirtd_stop" EXIT
    else
        trap libvirtd_stop EXIT
    fi
}

# libvirt_python_venv PREFIX: prints the python of a venv in
# $HLFS_CACHE/libvirt-python-<key> that has libvirt-python $LIBVIRT_PYTHON_VERSION
# compiled against PREFIX's libvirt (rpath to PREFIX's lib dir). Built once
# per key (prefix path, its headers, the python, the version), ~25 s.
#
# libvirt-python's generator needs libvirt-api.xml, which PREFIX lacks (the
# build has -Ddocs=disabled): it is generated here with libvirt's own
# scripts/apibuild.py from the patched source tree next to PREFIX
# (build.sh's $HLFS_CACHE/libvirt-<key>/src), read-only, into the venv dir.
LIBVIRT_PYTHON_VERSION=${LIBVIRT_PYTHON_VERSION:-11.3.0}
libvirt_python_venv() {
    local prefix=$1 cache=${HLFS_CACHE:-/var/cache/hlfs-build}
    local src pcdir libdir py key venv
    [ -d "$prefix/include/libvirt" ] || { _lvd_log "error: '$prefix' is not a libvirt install prefix (libvirt-pool/build.sh prints it)"; return 1; }
    src=$(dirname "$prefix")/src
    pcdir=$(dirname "$(find "$prefix/lib" -name libvirt.pc -print -quit)")
    [ -f "$pcdir/libvirt.pc" ] || { _lvd_log "error: no libvirt.pc under $prefix/lib"; return 1; }
    libdir=$(PKG_CONFIG_PATH=$pcdir pkg-config --variable=libdir libvirt)
    py=$(command -v python3) || { _lvd_log "error: python3 not found"; return 1; }
    key=$( {
        echo "$prefix $LIBVIRT_PYTHON_VERSION"
        "$py" -c 'import sys; print(sys.version, sys.base_prefix)'
        cat "$prefix"/include/libvirt/*.h
    } | sha256sum | cut -c1-16)
    venv=$cache/libvirt-python-$key

    mkdir -p "$cache"
    (
        exec 8>"$venv.lock"
        flock 8
        if [ -f "$venv/ok" ] && env -u LD_LIBRARY_PATH "$venv/bin/python" -c 'import libvirt' 2>/dev/null; then
            exit 0
        fi
        [ -f "$src/scripts/apibuild.py" ] || {
            _lvd_log "error: libvirt source tree $src is missing (libvirt-pool/build.sh keeps it next to the prefix)"
            exit 1
        }
        _lvd_log "building libvirt-python $LIBVIRT_PYTHON_VERSION against $prefix in $venv"
        rm -rf "$venv"
        mkdir -p "$venv/api/docs" "$venv/api/include/libvirt" "$venv/pkgconfig"
        cp "$prefix/include/libvirt/libvirt-common.h" "$venv/api/include/libvirt/"
        # apibuild.py SRCDIR(docs) BUILDDIR: reads SRCDIR/../{src,include}, writes BUILDDIR
        (cd "$venv/api" && "$py" "$src/scripts/apibuild.py" "$src/docs" "$venv/api/docs") >&2 ||
            exit 1
        local f
        for f in "$pcdir"/libvirt*.pc; do
            sed -e "s|^\(libvirt[a-z_]*_api\)=.*/\([^/]*\)\$|\1=$venv/api/docs/\2|" "$f" \
                >"$venv/pkgconfig/$(basename "$f")"
        done
        "$py" -m venv "$venv" >&2
        # --no-cache-dir: pip's wheel cache would hand back a build against
        # an earlier prefix (same sdist, other library).
        PKG_CONFIG_PATH=$venv/pkgconfig LDFLAGS="-Wl,-rpath,$libdir" \
            "$venv/bin/pip" install -q --disable-pip-version-check --no-cache-dir \
            --no-binary libvirt-python "libvirt-python==$LIBVIRT_PYTHON_VERSION" >&2 || exit 1
        # The module finds PREFIX's libvirt.so through its rpath alone.
        local want
        want=$(PKG_CONFIG_PATH=$pcdir pkg-config --modversion libvirt |
            awk -F. '{print $1 * 1000000 + $2 * 1000 + $3}')
        env -u LD_LIBRARY_PATH "$venv/bin/python" -c '
import libvirt, sys
v = libvirt.getVersion()
sys.exit(0 if v == int(sys.argv[1]) else f"libvirt.getVersion() is {v}, not {sys.argv[1]}")' "$want" >&2 ||
            exit 1
        echo "$prefix" >"$venv/prefix"
        touch "$venv/ok"
        # Venvs of prefixes that no longer exist are stale.
        local old
        for old in "$cache"/libvirt-python-*/prefix; do
            [ -d "$(cat "$old")" ] || rm -rf -- "$(dirname "$old")" "$(dirname "$old").lock"
        done
    ) || { _lvd_log "error: building libvirt-python failed"; return 1; }
    echo "$venv/bin/python"
}
