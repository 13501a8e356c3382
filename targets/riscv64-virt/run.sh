#!/usr/bin/env bash
# Builds the pagepin riscv64 test kernel and boots it on QEMU `virt` with 4 harts.
#
#   bash targets/riscv64-virt/run.sh sv39|sv48|sv57
#       One boot (-bios none, -m 256M, -cpu rv64). Fails on a non-zero QEMU
#       status, a missing or not-last summary line, violations > 0, or a
#       timeout.
#
#   bash targets/riscv64-virt/run.sh sv39|sv48|sv57 --broken FEATURE [--runs N]
#       Builds with a deliberately broken cargo feature (broken-no-drain,
#       broken-early-table-reuse, broken-no-remote-fence) and boots it N times
#       (default 20); prints how many runs detected it (violations > 0, a
#       trap, or a non-zero status). Exits 0 whatever the rate.
#
# QEMU comes from Debian's packages (apt-get download qemu-system-misc + dpkg
# -x, no install) into $QEMU_CACHE (default: <repo>/target/qemu-riscv64,
# ignored by git) and is reused from there. The kernel is built with the rustup
# target riscv64gc-unknown-none-elf, or else with Debian's toolchain and
# -Zbuild-std=core (PAGEPIN_BARE_METAL=rustup|debian forces one).
# BOOT_TIMEOUT (seconds, default 240) bounds each boot.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
QEMU_CACHE=${QEMU_CACHE:-$REPO/target/qemu-riscv64}
BOOT_TIMEOUT=${BOOT_TIMEOUT:-240}
TARGET=riscv64gc-unknown-none-elf

usage() {
    echo "usage: $0 sv39|sv48|sv57 [--broken FEATURE] [--runs N]" >&2
    exit 2
}

[ $# -ge 1 ] || usage
MODE=$1
shift
BROKEN=
RUNS=20
while [ $# -gt 0 ]; do
    case "$1" in
        --broken) BROKEN=${2:?}; shift 2 ;;
        --runs) RUNS=${2:?}; shift 2 ;;
        *) usage ;;
    esac
done
case "$MODE" in
    sv39) FEATURES= ;;
    sv48) FEATURES=sv48 ;;
    sv57) FEATURES=sv57 ;;
    *) usage ;;
esac
if [ -n "$BROKEN" ]; then
    FEATURES=${FEATURES:+$FEATURES,}$BROKEN
fi
VARIANT=$MODE${BROKEN:+-$BROKEN}

# --- QEMU ---------------------------------------------------------------------
# shellcheck source=../qemu.sh
. "$REPO/targets/qemu.sh"
qemu_fetch riscv64 "$QEMU_CACHE"

# --- the kernel -------------------------------------------------------------
BARE_METAL=${PAGEPIN_BARE_METAL:-}
if [ -z "$BARE_METAL" ]; then
    if rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
        BARE_METAL=rustup
    else
        BARE_METAL=debian
    fi
fi
TARGET_DIR=$HERE/target/$VARIANT-$BARE_METAL
build=(cargo build --release --target "$TARGET" --target-dir "$TARGET_DIR")
if [ -n "$FEATURES" ]; then
    build+=(--features "$FEATURES")
fi
echo "run.sh: building ($BARE_METAL toolchain${FEATURES:+, features $FEATURES})"
if [ "$BARE_METAL" = rustup ]; then
    (cd "$HERE" && "${build[@]}")
else
    (cd "$HERE" && PATH="/usr/bin:$PATH" RUSTC_BOOTSTRAP=1 "${build[@]}" \
        -Zbuild-std=core -Zbuild-std-features=compiler-builtins-mem)
fi
KERNEL=$TARGET_DIR/$TARGET/release/pagepin-riscv64-virt

# --- boot ---------------------------------------------------------------------
# boot LOG: boots once, output to LOG (and the terminal); returns QEMU's status
# (124 on timeout).
boot() {
    local status=0
    timeout "$BOOT_TIMEOUT" "$QEMU" -L "$QEMU_CACHE/root/usr/share/qemu" \
        -machine virt -cpu rv64 -smp 4 -m 256M -bios none \
        -nographic -nic none -kernel "$KERNEL" </dev/null | tr -d '\r' >"$1" || status=${PIPESTATUS[0]}
    return "$status"
}

# check LOG STATUS: prints the verdict; returns 0 if the boot passed.
check() {
    local log=$1 status=$2 last summary violations
    last=$(grep -v '^$' "$log" | tail -n 1 || true)
    summary=$(grep '^pagepin-qemu arch=' "$log" | tail -n 1 || true)
    violations=$(sed -n 's/.* violations=\([0-9]*\)$/\1/p' <<<"$summary")
    if [ "$status" = 124 ]; then
        echo "run.sh: FAILED: timeout after ${BOOT_TIMEOUT} s"
    elif [ "$status" != 0 ]; then
        echo "run.sh: FAILED: QEMU exited with status $status"
    elif [ -z "$summary" ]; then
        echo "run.sh: FAILED: no summary line"
    elif [ "$summary" != "$last" ]; then
        echo "run.sh: FAILED: the summary line is not the last line"
    elif [ "$violations" != 0 ]; then
        echo "run.sh: FAILED: violations=$violations"
    else
        echo "run.sh: ok: $summary"
        return 0
    fi
    return 1
}

LOG_DIR=$HERE/target/logs
mkdir -p "$LOG_DIR"
if [ -z "$BROKEN" ]; then
    log=$LOG_DIR/$VARIANT.log
    t0=$(date +%s)
    status=0
    boot "$log" || status=$?
    cat "$log"
    echo "run.sh: boot took $(($(date +%s) - t0)) s"
    check "$log" "$status"
    exit $?
fi

detected=0
timeouts=0
for run in $(seq 1 "$RUNS"); do
    log=$LOG_DIR/$VARIANT-$run.log
    status=0
    boot "$log" || status=$?
    summary=$(grep '^pagepin-qemu arch=' "$log" | tail -n 1 || true)
    violations=$(sed -n 's/.* violations=\([0-9]*\)$/\1/p' <<<"$summary")
    if [ "$status" = 124 ]; then
        timeouts=$((timeouts + 1))
        verdict="timeout"
    elif [ "$status" != 0 ] || [ "${violations:-0}" != 0 ] || grep -q 'FAILED' "$log"; then
        detected=$((detected + 1))
        verdict="detected (status $status, violations=${violations:-none}: $(grep -m1 -E 'violation|FAILED' "$log" || true))"
    else
        verdict="not detected"
    fi
    echo "run.sh: $BROKEN run $run/$RUNS: $verdict"
done
echo "run.sh: $BROKEN ($MODE): detected in $detected of $RUNS runs ($timeouts timeouts)"
