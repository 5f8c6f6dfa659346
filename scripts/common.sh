# Shared helpers for scripts/*.sh (sourced, not run).

# Installs Debian packages that are missing (quietly). Needs root or sudo.
need_apt() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep "install ok installed" >/dev/null || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing: ${missing[*]}" >&2
    if [ -z "${HLFS_APT_UPDATED:-}" ]; then
        $sudo apt-get update -qq >/dev/null
        export HLFS_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

need_cargo() {
    if ! command -v cargo >/dev/null; then
        [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
    fi
    command -v cargo >/dev/null || {
        echo "error: cargo not found; install Rust (rustup or Debian's cargo) first" >&2
        exit 1
    }
}

# Where build products outside the checkout are cached (QEMU, guest image).
export HLFS_CACHE=${HLFS_CACHE:-/var/cache/hlfs-build}

step() { printf '\n==> %s\n' "$*" >&2; }

# Cargo cannot name a binary with a dot: give the seed's tools their names
# next to hlfs (cli/install.sh does the same for an installed copy).
link_seed_tools() {
    ln -sf snapshot_hlfs "$1/snapshot.hlfs"
    ln -sf clone_hlfs "$1/clone.hlfs"
}
