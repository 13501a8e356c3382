#!/usr/bin/env bash
# Builds the pagepin aarch64 test kernel and boots it on QEMU `virt` with 4 CPUs.
#
#   bash targets/aarch64-virt/run.sh 4k|64k
#       One race boot (4 KiB granule: Stage1G4K48, -m 256M; 64 KiB granule:
#       Stage1G64K48, -m 2G). Fails on a non-zero QEMU status, a missing or
#       not-last summary line, violations > 0, mismatches > 0, or a timeout.
#
#   bash targets/aarch64-virt/run.sh sweep 4k|16k|64k
#       The format sweep (src/sweep/): boots the sweep kernel at EL2
#       (virtualization=on, -cpu max, one CPU, -m 2G) and compares pagepin's
#       stage 1 walks of every configuration of the granule (TTBR0 and TTBR1)
#       with the MMU's (AT + PAR_EL1, instruction fetches). Same verdict.
#
#   bash targets/aarch64-virt/run.sh stage2 [4k]
#       Stage 2 at EL2 (src/stage2/): boots the hypervisor kernel at EL2
#       (virtualization=on, -cpu max, 4 CPUs, -m 256M): CPU 0 balloons guest
#       memory with the truncate typestate API and leases, CPU 1 GUP-pins
#       guest memory through the live stage-2 tables (Stage2G4K40, two
#       concatenated start tables), CPUs 2-3 run a guest at EL1 touching its
#       memory; pagepin's stage-2 walk is compared with AT S12E1R/W. Same
#       verdict.
#
#   bash targets/aarch64-virt/run.sh 4k|64k --broken FEATURE [--runs N]
#       Builds with a deliberately broken cargo feature (broken-no-drain,
#       broken-early-table-reuse, broken-no-tlbi), or pagepin without a
#       GUP-fast re-check (broken-no-recheck, broken-no-unit-recheck: the
#       walkers call pagepin's broken twin `gup::broken::get_pages`, with the
#       kernel's `stretch` feature), and boots it N times
#       (default 20); prints how many runs detected it (violations > 0, an
#       exception, or a non-zero status). Exits 0 whatever the rate.
#
# QEMU comes from Debian's packages (apt-get download + dpkg -x, no install:
# `apt-get install qemu-system-*` conflicts with the preinstalled qemu-utils)
# into $QEMU_CACHE (default: <repo>/target/qemu-aarch64, ignored by git) and is
# reused from there. The kernel is built with the rustup target
# aarch64-unknown-none, or else with Debian's toolchain and -Zbuild-std=core
# (as .ci/run does; PAGEPIN_BARE_METAL=rustup|debian forces one).
# BOOT_TIMEOUT (seconds, default 240) bounds each boot.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
QEMU_CACHE=${QEMU_CACHE:-$REPO/target/qemu-aarch64}
BOOT_TIMEOUT=${BOOT_TIMEOUT:-240}
TARGET=aarch64-unknown-none

usage() {
    echo "usage: $0 [sweep|stage2] 4k|16k|64k [--broken FEATURE] [--runs N]" >&2
    exit 2
}

[ $# -ge 1 ] || usage
MODE=race
if [ "$1" = sweep ]; then
    MODE=sweep
    shift
    [ $# -ge 1 ] || usage
elif [ "$1" = stage2 ]; then
    MODE=stage2
    shift
    # One granule (4 KiB: Stage2G4K40); the argument is optional.
    if [ $# -eq 0 ] || [ "${1#--}" != "$1" ]; then
        set -- 4k "$@"
    fi
fi
GRANULE=$1
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
case "$MODE:$GRANULE" in
    race:4k) FEATURES=; MEMORY=256M ;;
    race:64k) FEATURES=granule-64k; MEMORY=2G ;;
    sweep:4k | sweep:16k | sweep:64k) FEATURES=; MEMORY=2G ;;
    stage2:4k) FEATURES=; MEMORY=256M ;;
    *) usage ;;
esac
if [ "$MODE" = sweep ]; then
    BIN=pagepin-aarch64-sweep
    # EL2 (the sweep drives the EL1&0 regime from there), all granules.
    MACHINE=virt,gic-version=3,virtualization=on
    CPU=max
    SMP=1
elif [ "$MODE" = stage2 ]; then
    BIN=pagepin-aarch64-stage2
    # EL2 with 4 CPUs: the hypervisor, its device and two vCPUs.
    MACHINE=virt,gic-version=3,virtualization=on
    CPU=max
    SMP=4
else
    BIN=pagepin-aarch64-virt
    MACHINE=virt,gic-version=3
    CPU=cortex-a72
    SMP=4
fi
case "$BROKEN" in
    "") ;;
    # broken-no-recheck and broken-no-unit-recheck are kernel features too:
    # the walkers call pagepin's broken twin of GUP-fast by name (the
    # library's `broken-twins` feature), with `stretch` widening the window.
    *) FEATURES=${FEATURES:+$FEATURES,}$BROKEN ;;
esac
VARIANT=g$GRANULE${BROKEN:+-$BROKEN}
if [ "$MODE" != race ]; then
    VARIANT=$MODE-$VARIANT
fi

# --- QEMU ---------------------------------------------------------------------
# shellcheck source=../qemu.sh
. "$REPO/targets/qemu.sh"
qemu_fetch aarch64 "$QEMU_CACHE"
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
build=(cargo build --release --target "$TARGET" --target-dir "$TARGET_DIR" --bin "$BIN")
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
KERNEL=$TARGET_DIR/$TARGET/release/$BIN

# --- boot ---------------------------------------------------------------------
# boot LOG: boots once, output to LOG (and the terminal); returns QEMU's status
# (124 on timeout).
boot() {
    local status=0
    timeout "$BOOT_TIMEOUT" "$QEMU" -L "$QEMU_CACHE/root/usr/share/qemu" \
        -machine "$MACHINE" -cpu "$CPU" -smp "$SMP" -m "$MEMORY" \
        -nographic -nic none -semihosting-config "enable=on,target=native,arg=$MODE,arg=$GRANULE" \
        -kernel "$KERNEL" </dev/null | tr -d '\r' >"$1" || status=${PIPESTATUS[0]}
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
    elif ! grep -q ' mismatches=0 ' <<<"$summary"; then
        echo "run.sh: FAILED: the MMU and pagepin disagree: $summary"
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
echo "run.sh: $BROKEN ($GRANULE): detected in $detected of $RUNS runs ($timeouts timeouts)"
