# shellcheck shell=bash
# What the libvirt end-to-end scripts share: the patched libvirt's prefix,
# the test guest, a private libvirtd (tests/lib/libvirtd.sh) and virsh on
# it. Sourced after tests/lib/qemu.sh, e2e_init and qemu_init, with T set to
# the script's work directory.
#
#   libvirt_prefix            PREFIX: $HLFS_LIBVIRT_PREFIX, else libvirt-pool/build.sh's
#   libvirt_guest             KERNEL, INITRD, CMDLINE, DISK of tests/guest/build-guest.sh;
#                             DOMTYPE (kvm where /dev/kvm runs the guest, else qemu)
#   libvirt_check_sock NAME   QEMU's monitor socket of domain NAME fits a UNIX path
#   libvirt_start CLEANUP     a private libvirtd; CLEANUP is the EXIT trap, and
#                             libvirtd_start chains the daemon's stop after it
#   libvirt_drop [--snapshots-metadata] DOMAIN...   destroy and undefine (for cleanups)
#   V ARGS...                 virsh on that libvirtd
#   vfail MSG                 fail, with the tail of libvirtd's log
#   expect_fail DESC REGEX VIRSH-ARGS...   the virsh command must fail with REGEX
#   ok MSG                    a passed step

# shellcheck source=libvirtd.sh
. "$HLFS_ROOT/tests/lib/libvirtd.sh"

ok() { printf 'ok   %s\n' "$*"; }

libvirt_prefix() {
    if [ -n "${HLFS_LIBVIRT_PREFIX:-}" ]; then
        PREFIX=$HLFS_LIBVIRT_PREFIX
    else
        PREFIX=$("$HLFS_ROOT/libvirt-pool/build.sh" 2>"$T/libvirt-build.err" | tail -n1) || {
            tail -n 30 "$T/libvirt-build.err" >&2
            fail "libvirt-pool/build.sh failed"
        }
    fi
    [ -x "$PREFIX/sbin/libvirtd" ] || fail "no libvirtd in '$PREFIX'"
}

libvirt_guest() {
    "$HLFS_ROOT/tests/guest/build-guest.sh" >"$T/guest.env" 2>"$T/build-guest.err" || {
        cat "$T/build-guest.err" >&2
        fail "tests/guest/build-guest.sh failed"
    }
    _genv() { sed -n "s/^$1=//p" "$T/guest.env" | head -n1; }
    KERNEL=$(_genv KERNEL) INITRD=$(_genv INITRD) CMDLINE=$(_genv CMDLINE) DISK=$(_genv DISK)
    [ -f "$KERNEL" ] && [ -f "$INITRD" ] && [ -f "$DISK" ] && [ -n "$CMDLINE" ] ||
        fail "build-guest.sh printed no KERNEL/INITRD/CMDLINE/DISK: $(cat "$T/guest.env")"
    case "$(guest_accel)" in kvm) DOMTYPE=kvm ;; *) DOMTYPE=qemu ;; esac
}

# Domain names are kept short: QEMU's monitor socket is
# PREFIX/var/lib/libvirt/qemu/domain-ID-NAME/monitor.sock, and a UNIX
# socket path has at most 107 bytes.
libvirt_check_sock() {
    local sock="$PREFIX/var/lib/libvirt/qemu/domain-999-$1/monitor.sock"
    [ ${#sock} -le 107 ] ||
        fail "the build prefix $PREFIX is too long for QEMU's monitor socket ($sock); use a shorter HLFS_CACHE"
}

# QEMU comes from each domain's <emulator>; the hlfs CLI (pool backend,
# snapshots) from $HLFS_CLI. libvirtd gets this shell's environment
# (HADOOP_CONF_DIR for HDFS pools).
libvirt_start() {
    # shellcheck disable=SC2064 # the trap names the caller's function
    trap "$1" EXIT
    libvirtd_start "$PREFIX" "$HLFS_CLI" || fail "libvirtd did not start"
}

V() { "$PREFIX/bin/virsh" -q -c "$HLFS_LIBVIRT_URI" "$@"; }

libvirt_drop() {
    local extra=() d
    [ "${1:-}" = --snapshots-metadata ] && { extra=(--snapshots-metadata); shift; }
    [ -n "$LIBVIRTD_PID" ] || return 0
    for d in "$@"; do
        V destroy "$d" >/dev/null 2>&1
        V undefine "$d" "${extra[@]}" >/dev/null 2>&1
    done
    return 0
}

vfail() { fail "$* (libvirtd log: $(tail -n 5 "$LIBVIRTD_LOG" 2>/dev/null))"; }

expect_fail() {
    local d=$1 re=$2 out
    shift 2
    if out=$(V "$@" 2>&1); then fail "$d: 'virsh $*' succeeded:
$out"; fi
    grep -Eq -- "$re" <<<"$out" || fail "$d: 'virsh $*' failed without /$re/:
$out"
    ok "$d: $(grep -o 'error: .*' <<<"$out" | tail -n1 | cut -c1-300)"
}
