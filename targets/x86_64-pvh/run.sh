#!/usr/bin/env bash
# Builds pagepin's x86_64 PVH test kernel and boots it in QEMU (q35, 4 CPUs).
#
#   bash targets/x86_64-pvh/run.sh 4|5 [race|sweep]
#       One boot: 4-level paging (-cpu qemu64,+pdpe1gb) or 5-level paging
#       (-cpu qemu64,+la57,+pdpe1gb), -m 2G; `race` (the default) is the
#       GUP-fast/truncate race, `sweep` compares pagepin's walk with the MMU
#       (with +smep,+smap: the U/S bit is checked through SMAP and SMEP).
#       Passes when QEMU exits through isa-debug-exit with the kernel's success
#       value (status 33) and the last line on COM1 is the summary
#       `pagepin-qemu arch=x86_64 mode=<mode> cpus=4 granule=4k levels=<l>
#       checks=<n> mismatches=0 violations=0` with n > 0; anything else
#       (another status, a timeout, a missing or not-last summary) fails.
#
#   bash targets/x86_64-pvh/run.sh 4|5 [race|sweep] --broken FEATURE [--runs N]
#       Builds a deliberately broken kernel and boots it N times (default 20);
#       prints how many runs detected it (violations or mismatches > 0, an
#       exception, or another failure). Exits 0 whatever the rate. Race:
#       the kernel feature broken-no-ack; pagepin's GUP-fast without its entry
#       re-check (broken-no-recheck) or without its unit re-check
#       (broken-no-unit-recheck), the broken twins the walkers call by name
#       (the library's broken-twins feature). Sweep: broken-table-grants (the
#       walker ignores table entries' R/W, U/S and XD).
#
# Environment: KERNEL_ARGS (more kernel command-line words, e.g. `guard=epoch
# stretch=2000`: the race's walkers in epoch read sections with interrupts
# on, their memory-map lookups stretched; `stretch2m=1`: also every lookup of
# a whole 2 MiB unit; `stall=N`: one GUP-fast call in N of each walker
# stalls in its first lookup until CPU 0 has truncated that page's slot and
# mapped its unit again at another slot; `unmap=leaves`: 2 MiB leaves cleared in place, their
# table kept; `layout=unversioned`: the memory map keeps no layout version), ROUNDS (race: writer rounds, default 1000; sweep: table sets
# swept, default 1000), SEED (default: from the
# clock; printed), CPUS (default 4), BOOT_TIMEOUT (seconds per boot, default
# 150), PAGEPIN_BARE_METAL=rustup|debian (the toolchain, as .ci/run chose it;
# default: rustup if its x86_64-unknown-none target is installed), QEMU_CACHE
# (default <repo>/target/qemu-x86_64, ignored by git, reused by later runs).
#
# QEMU comes from Debian's packages (`apt-get download` + `dpkg -x`; installing
# qemu-system-* conflicts with the preinstalled qemu-utils), plus the shared
# libraries it needs through apt-get install.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
QEMU_CACHE=${QEMU_CACHE:-$REPO/target/qemu-x86_64}
BOOT_TIMEOUT=${BOOT_TIMEOUT:-150}
ROUNDS_SET=${ROUNDS:-}
ROUNDS=${ROUNDS:-1000}
CPUS=${CPUS:-4}
TARGET=x86_64-unknown-none

usage() {
    echo "usage: $0 4|5 [race|sweep] [--broken FEATURE] [--runs N]" >&2
    exit 2
}

[ $# -ge 1 ] || usage
LEVELS=$1
shift
MODE=race
case "${1:-}" in
    race|sweep) MODE=$1; shift ;;
esac
BROKEN=
RUNS=20
while [ $# -gt 0 ]; do
    case "$1" in
        --broken) BROKEN=${2:?}; shift 2 ;;
        --runs) RUNS=${2:?}; shift 2 ;;
        *) usage ;;
    esac
done
case "$LEVELS" in
    4) CPU_MODEL=qemu64,+pdpe1gb ;;
    5) CPU_MODEL=qemu64,+la57,+pdpe1gb ;;
    *) usage ;;
esac
if [ "$MODE" = sweep ]; then
    # The sweep checks U/S through SMAP (data) and SMEP (fetches).
    CPU_MODEL=$CPU_MODEL,+smep,+smap
    ROUNDS=${ROUNDS_SET:-1000}
    case "$BROKEN" in
        ''|broken-table-grants) ;;
        *) echo "run.sh: a sweep takes only --broken broken-table-grants" >&2; exit 2 ;;
    esac
fi

# --- QEMU ---------------------------------------------------------------------
# shellcheck source=../qemu.sh
. "$REPO/targets/qemu.sh"
qemu_fetch x86_64 "$QEMU_CACHE"
"$QEMU" --version | head -n 1

# --- kernel -------------------------------------------------------------------
FEATURE_ARGS=()
case "$BROKEN" in
    broken-no-recheck|broken-no-unit-recheck)
        # The walkers call pagepin's broken twin of GUP-fast without its entry
        # re-check or without its unit re-check, by name (kernel features that
        # turn on the library's `broken-twins`). The boots use the epoch walk guard (interrupts
        # on: with interrupts off no shootdown, and so no free, can complete
        # inside a walk, and neither re-check can matter) and stretch the
        # window between the entry load and the get (KERNEL_ARGS overrides).
        # broken-no-recheck stalls the first lookup of one GUP-fast call in 8
        # until CPU 0 has truncated that page's slot and mapped its unit at
        # another slot (stall=8: the unit re-check passes, only the entry
        # re-check can see it). broken-no-unit-recheck stretches lookups
        # (stretch=2000), also every lookup of a whole 2 MiB unit
        # (stretch2m=1), and clears 2 MiB leaves in place (unmap=leaves):
        # the table above stays attached, so a slot mapped again with the same
        # leaf over its unit split in the meantime passes the entry re-check.
        if [ "$BROKEN" = broken-no-unit-recheck ]; then
            KERNEL_ARGS=${KERNEL_ARGS-guard=epoch stretch=2000 stretch2m=1 unmap=leaves}
        else
            KERNEL_ARGS=${KERNEL_ARGS-guard=epoch stall=8}
        fi
        ;;
esac
if [ -n "$BROKEN" ]; then
    FEATURE_ARGS=(--features "$BROKEN")
fi
TOOLCHAIN=${PAGEPIN_BARE_METAL:-}
if [ "$TOOLCHAIN" != rustup ] && [ "$TOOLCHAIN" != debian ]; then
    if rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
        TOOLCHAIN=rustup
    else
        TOOLCHAIN=debian
    fi
fi
echo "run.sh: building the kernel ($TOOLCHAIN toolchain${BROKEN:+, feature $BROKEN})"
cd "$HERE"
if [ "$TOOLCHAIN" = rustup ]; then
    cargo build --release --target "$TARGET" "${FEATURE_ARGS[@]}"
    KERNEL=$HERE/target/$TARGET/release/pagepin-x86-pvh
else
    # Debian's toolchain (as .ci/run installs it): core from source, and the
    # distribution's lld when there is no rust-lld.
    if ! PATH="/usr/bin:$PATH" command -v rust-lld >/dev/null; then
        CARGO_TARGET_X86_64_UNKNOWN_NONE_LINKER=$(command -v ld.lld-22 || command -v ld.lld)
        export CARGO_TARGET_X86_64_UNKNOWN_NONE_LINKER
    fi
    PATH="/usr/bin:$PATH" RUSTC_BOOTSTRAP=1 cargo build --release -Zbuild-std=core \
        -Zbuild-std-features=compiler-builtins-mem --target "$TARGET" \
        --target-dir target/debian "${FEATURE_ARGS[@]}"
    KERNEL=$HERE/target/debian/$TARGET/release/pagepin-x86-pvh
fi

# --- boot ---------------------------------------------------------------------
# One boot; returns 0 for a clean pass, 1 for anything else. Its log is in $LOG.
LOG=$HERE/target/boot-$LEVELS-$MODE${BROKEN:+-$BROKEN}.log
boot() {
    local seed=$1 status summary t0
    echo "run.sh: $MODE boot, $LEVELS-level paging, -cpu $CPU_MODEL -smp $CPUS, rounds=$ROUNDS seed=$seed ${KERNEL_ARGS:-}"
    t0=$(date +%s)
    set +e
    timeout "$BOOT_TIMEOUT" "$QEMU" \
        -L "$QEMU_CACHE/root/usr/share/qemu" -L "$QEMU_CACHE/root/usr/share/seabios" \
        -machine q35 -cpu "$CPU_MODEL" -smp "$CPUS" -m 2G \
        -display none -serial stdio -monitor none -nic none -no-reboot \
        -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
        -kernel "$KERNEL" -append "mode=$MODE rounds=$ROUNDS seed=$seed cpus=$CPUS ${KERNEL_ARGS:-}" \
        </dev/null | tr -d '\r' >"$LOG"
    status=${PIPESTATUS[0]}
    set -e
    summary=$(grep -v '^$' "$LOG" | tail -n 1)
    echo "run.sh: QEMU exit status $status after $(($(date +%s) - t0)) s"
    case "$status" in
        33) ;;
        124) echo "run.sh: TIMEOUT after $BOOT_TIMEOUT s"; return 1 ;;
        *) echo "run.sh: FAILED: QEMU exit status $status (33 is success)"; return 1 ;;
    esac
    case "$summary" in
        *" checks=0 "*) echo "run.sh: FAILED: nothing was checked: $summary"; return 1 ;;
        "pagepin-qemu arch=x86_64 mode=$MODE cpus=$CPUS granule=4k levels=$LEVELS checks="*" mismatches=0 violations=0") ;;
        *) echo "run.sh: FAILED: the last line is not a clean summary: $summary"; return 1 ;;
    esac
}

if [ -z "$BROKEN" ]; then
    SEED=${SEED:-$(($(date +%s) % 100000))}
    if boot "$SEED"; then
        cat "$LOG"
        echo "run.sh: $LEVELS-level $MODE boot passed"
    else
        cat "$LOG"
        exit 1
    fi
else
    detected=0
    for run in $(seq 1 "$RUNS"); do
        seed=$(( ${SEED:-$(date +%s)} + run ))
        if boot "$seed"; then
            echo "run.sh: run $run: NOT detected: $(tail -n 1 "$LOG")"
        else
            detected=$((detected + 1))
            echo "run.sh: run $run: detected: $(grep -m 1 -E 'violation|MISMATCH|EXCEPTION|PANIC' "$LOG" || true)"
            echo "run.sh:     $(grep -m 1 '^violations: ' "$LOG" || grep -v '^$' "$LOG" | tail -n 1)"
        fi
    done
    echo "run.sh: $BROKEN ($LEVELS-level): detected in $detected of $RUNS runs"
fi
