# Shared by targets/*/run.sh (sourced): QEMU from Debian's packages.
#
#   qemu_fetch x86_64|aarch64|riscv64 CACHE
#       Makes CACHE/root/usr/bin/qemu-system-<arch> runnable: `apt-get download`
#       of the packages + `dpkg -x` into CACHE (installing qemu-system-*
#       conflicts with the preinstalled qemu-utils), extracted aside and moved
#       into place so an interrupted run leaves no half tree; then installs the
#       shared libraries it needs. Does nothing if the binary already runs.
#       Sets QEMU (the binary) and, for x86_64, exports QEMU_MODULE_DIR.
qemu_fetch() {
    local arch=$1 cache=$2 pkgs sudo t0
    case "$arch" in
        x86_64) pkgs="qemu-system-x86 qemu-system-data qemu-system-common seabios" ;;
        aarch64) pkgs="qemu-system-arm qemu-system-data qemu-system-common" ;;
        riscv64) pkgs="qemu-system-misc qemu-system-data qemu-system-common" ;;
        *) echo "qemu_fetch: unknown architecture $arch" >&2; return 2 ;;
    esac
    QEMU=$cache/root/usr/bin/qemu-system-$arch
    export QEMU_MODULE_DIR=$cache/root/usr/lib/x86_64-linux-gnu/qemu
    if [ -x "$QEMU" ] && "$QEMU" --version >/dev/null 2>&1; then
        return 0
    fi
    if [ "$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi
    echo "qemu_fetch: fetching QEMU ($arch) from Debian's packages into $cache"
    t0=$(date +%s)
    DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq
    if [ ! -x "$QEMU" ]; then
        rm -rf "$cache"
        mkdir -p "$cache/debs"
        # shellcheck disable=SC2086 # a list of package names
        (cd "$cache/debs" && apt-get download $pkgs)
        for deb in "$cache"/debs/*.deb; do
            dpkg -x "$deb" "$cache/root.tmp"
        done
        mv "$cache/root.tmp" "$cache/root"
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libfdt1 libcapstone4 \
        libpmem1 librdmacm1 libibverbs1 libslirp0 libvdeplug2 >/dev/null
    "$QEMU" --version >/dev/null || { echo "qemu_fetch: QEMU does not run from $cache" >&2; return 1; }
    echo "qemu_fetch: QEMU ready in $(($(date +%s) - t0)) s"
}
