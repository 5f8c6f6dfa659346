#!/usr/bin/env bash
# Boots the HLFS test guest once and waits for it to power off.
#
# Usage: run-guest.sh [options] [-- EXTRA_QEMU_ARGS...]
#   -d FILE    raw disk to boot (virtio, format=raw); boot a copy of the
#              built disk.raw, never the cached one
#   -D SPEC    the whole -drive value instead, e.g. for a block driver:
#              "file=...,if=virtio,format=raw,cache=none"; "none": no
#              -drive, the disk comes with EXTRA_QEMU_ARGS (a -device)
#   -c CMD     guest command via fw_cfg (write:TOKEN, fill:MIB, rm-fill; join
#              several with ';'); none = just report
#   -k         boot the kernel directly (-kernel/-initrd) instead of the
#              disk's SYSLINUX; uses the uncompressed vmlinux (PVH) if built
#   -r ROOT    root= for -k (default LABEL=hlfs-root; /dev/vda for a bare fs image)
#   -l LOG     write the serial console here (default: print it on stdout)
#   -t SECS    give up after SECS seconds (default 180), exit 124
#   -a ACCEL   kvm, tcg or auto (default $HLFS_GUEST_ACCEL or auto)
#   -q QEMU    QEMU binary (default $QEMU or qemu-system-x86_64)
# Exits 0 only if QEMU exited 0 and the guest printed "HLFS-GUEST: poweroff"
# and no "HLFS-GUEST: error=" line. Timing goes to stderr.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
qemu=${QEMU:-qemu-system-x86_64}
accel=${HLFS_GUEST_ACCEL:-auto}
drive="" cmd="" kernel_boot=0 root=LABEL=hlfs-root log="" timeout_s=180
while getopts "d:D:c:kr:l:t:a:q:" opt; do
    case "$opt" in
        d) drive="file=$OPTARG,if=virtio,format=raw" ;;
        D) drive=$OPTARG ;;
        c) cmd=$OPTARG ;;
        k) kernel_boot=1 ;;
        r) root=$OPTARG ;;
        l) log=$OPTARG ;;
        t) timeout_s=$OPTARG ;;
        a) accel=$OPTARG ;;
        q) qemu=$OPTARG ;;
        *) sed -n '2,22p' "$0" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ "${1:-}" = "--" ] && shift
[ -n "$drive" ] || { echo "run-guest: give -d FILE or -D SPEC" >&2; exit 2; }

# KVM only where it runs stock kernels: a readable /dev/kvm is not enough on
# hosts whose KVM is PVM (kvm_pvm), which runs only PVM-enabled guest
# kernels; a Debian kernel hangs there, so such hosts use TCG.
kvm_usable() {
    [ -r /dev/kvm ] && [ -w /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ]
}
if [ "$accel" = auto ]; then
    if kvm_usable; then accel=kvm; else accel=tcg; fi
fi
case "$accel" in
    kvm) accel_args=(-accel kvm -cpu host) ;;
    tcg) accel_args=(-accel tcg) ;;
    *) echo "run-guest: unknown accel $accel" >&2; exit 2 ;;
esac

boot_args=()
if [ $kernel_boot = 1 ]; then
    declare -A built
    while IFS='=' read -r k v; do
        [ -n "$v" ] && built[$k]=$v
    done < <("$HERE/build-guest.sh")
    kernel=${built[VMLINUX]:-${built[KERNEL]}}
    cmdline=${built[CMDLINE]/root=LABEL=hlfs-root/root=$root}
    boot_args=(-kernel "$kernel" -initrd "${built[INITRD]}" -append "$cmdline")
fi
fwcfg_args=()
[ -n "$cmd" ] && fwcfg_args=(-fw_cfg "name=opt/hlfs/cmd,string=$cmd")

own_log=0
if [ -z "$log" ]; then
    log=$(mktemp)
    own_log=1
fi
: >"$log"

drive_args=(-drive "$drive")
[ "$drive" = none ] && drive_args=()
args=(-m 256 "${accel_args[@]}" -display none -nic none -no-reboot -monitor none
    -serial "file:$log" "${drive_args[@]}" "${boot_args[@]}" "${fwcfg_args[@]}" "$@")
echo "run-guest: $qemu ${args[*]}" >&2
start=$(date +%s.%N)
rc=0
timeout "$timeout_s" "$qemu" "${args[@]}" </dev/null >&2 || rc=$?
end=$(date +%s.%N)
echo "run-guest: accel=$accel rc=$rc seconds=$(awk "BEGIN { printf \"%.2f\", $end - $start }")" >&2

[ $own_log = 1 ] && cat "$log"
ok=1
[ $rc = 0 ] || ok=0
grep -q 'HLFS-GUEST: poweroff' "$log" || ok=0
grep -q 'HLFS-GUEST: error=' "$log" && ok=0
[ $own_log = 1 ] && rm -f "$log"
if [ $ok = 1 ]; then exit 0; fi
[ $rc != 0 ] && exit $rc
exit 1
