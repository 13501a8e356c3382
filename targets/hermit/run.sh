#!/usr/bin/env bash
# pagepin inside a real Hermit kernel (issue 18): builds the Hermit loader and
# the app in targets/hermit/app against a patched copy of Hermit's kernel and
# boots it on QEMU with 4 CPUs.
#
#   bash targets/hermit/run.sh x86_64|aarch64
#       One boot. Passes when QEMU's status says the app exited 0 and the last
#       line of the app is `pagepin-hermit arch=<arch> cpus=4 pins=<n>
#       munmaps=<n> waited=<n> violations=0` with pins, munmaps and waited > 0
#       (waited: munmaps whose drain blocked on a pin); fails on anything else,
#       including a timeout.
#
#   bash targets/hermit/run.sh x86_64|aarch64 broken-no-drain [--runs N]
#       Builds the kernel with `pagepin-broken-no-drain` (munmap frees the
#       frames right after unmapping them, pinned or not, as Hermit did) and
#       boots it N times (default 10); prints how many boots detected it (a
#       violation, a panic, a timeout or another failure). Exits 0 whatever
#       the rate.
#
# Steps: the Hermit sources come from HERMIT_SRC (default: ../shared/vendor/hermit
# beside the repository, when it exists; otherwise the upstream repositories
# are cloned at the commits below). hermit-rs (with the kernel) is copied to
# target/hermit/src and the patches in targets/hermit/patches are applied (again only when the
# sources or the patches changed); the kernel depends on this repository's
# pagepin by path. The loader is copied, unpatched, to target/hermit/loader.
# rustup installs the pinned nightly; the loader and the app
# (which builds the kernel through the `hermit` crate) are built with it.
#
# Environment: HERMIT_SRC, SECONDS_RUN (app run time, default 3), SEED
# (default: from the clock), BOOT_TIMEOUT (seconds per boot, default 120;
# 60 for a broken build),
# QEMU_CACHE (default <repo>/target/qemu-<arch>, shared with the other
# targets/*/run.sh).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=../qemu.sh
. "$REPO/targets/qemu.sh"

TOOLCHAIN=nightly-2026-08-01
HERMIT_RS_COMMIT=61ee03c
KERNEL_COMMIT=906ea2a
LOADER_COMMIT=5016ded
SECONDS_RUN=${SECONDS_RUN:-3}

usage() {
    echo "usage: $0 x86_64|aarch64 [broken-no-drain [--runs N]]" >&2
    exit 2
}
[ $# -ge 1 ] || usage
ARCH=$1
shift
case "$ARCH" in x86_64|aarch64) ;; *) usage ;; esac
BROKEN=
RUNS=10
while [ $# -gt 0 ]; do
    case "$1" in
        broken-no-drain) BROKEN=$1; shift ;;
        --runs) RUNS=${2:?}; shift 2 ;;
        *) usage ;;
    esac
done
# A broken kernel's device writes may land in kernel memory and hang it: its
# boots time out sooner.
if [ -n "$BROKEN" ]; then BOOT_TIMEOUT=${BOOT_TIMEOUT:-60}; else BOOT_TIMEOUT=${BOOT_TIMEOUT:-120}; fi

# --- toolchain ----------------------------------------------------------------
if ! rustup run "$TOOLCHAIN" rustc --version >/dev/null 2>&1; then
    echo "run.sh: installing $TOOLCHAIN with rustup"
    if ! rustup toolchain install "$TOOLCHAIN" --profile minimal -c rust-src -c llvm-tools; then
        echo "run.sh: rustup could not install $TOOLCHAIN (rust-src, llvm-tools); Hermit needs exactly this nightly: install it by hand and run again" >&2
        exit 1
    fi
fi
rustup run "$TOOLCHAIN" rustc --version

# --- sources ------------------------------------------------------------------
WORK=$REPO/target/hermit
SRC=$WORK/src
if [ -z "${HERMIT_SRC:-}" ] && [ -d "$REPO/../shared/vendor/hermit" ]; then
    HERMIT_SRC=$REPO/../shared/vendor/hermit
fi
if [ -z "${HERMIT_SRC:-}" ]; then
    HERMIT_SRC=$WORK/upstream
    if [ ! -d "$HERMIT_SRC/hermit-rs/kernel/src" ]; then
        echo "run.sh: cloning Hermit (hermit-rs $HERMIT_RS_COMMIT, kernel $KERNEL_COMMIT, loader $LOADER_COMMIT)"
        rm -rf "$HERMIT_SRC"
        mkdir -p "$HERMIT_SRC"
        git clone -q https://github.com/hermit-os/hermit-rs "$HERMIT_SRC/hermit-rs"
        git -C "$HERMIT_SRC/hermit-rs" checkout -q "$HERMIT_RS_COMMIT"
        rm -rf "$HERMIT_SRC/hermit-rs/kernel"
        git clone -q https://github.com/hermit-os/kernel "$HERMIT_SRC/hermit-rs/kernel"
        git -C "$HERMIT_SRC/hermit-rs/kernel" checkout -q "$KERNEL_COMMIT"
        git clone -q https://github.com/hermit-os/loader "$HERMIT_SRC/loader"
        git -C "$HERMIT_SRC/loader" checkout -q "$LOADER_COMMIT"
    fi
fi
HERMIT_SRC=$(cd "$HERMIT_SRC" && pwd)
# The copy is remade when the sources' location or a patch changes.
STAMP=$( (echo "$HERMIT_SRC"; cat "$HERE"/patches/*.patch) | sha256sum | cut -c1-16)
if [ "$(cat "$WORK/src.stamp" 2>/dev/null)" != "$STAMP" ]; then
    echo "run.sh: copying $HERMIT_SRC to $SRC and applying $(ls "$HERE"/patches/*.patch | wc -l) patches"
    rm -rf "$SRC" "$WORK/src.stamp"
    mkdir -p "$SRC"
    cp -r "$HERMIT_SRC/hermit-rs" "$SRC"/
    if [ -d "$HERMIT_SRC/vendor" ]; then
        cp -r "$HERMIT_SRC/vendor" "$SRC"/
    fi
    for p in "$HERE"/patches/*.patch; do
        echo "run.sh:   $(basename "$p")"
        # Outside any repository (the copy lies inside this one's target/, and
        # inside a repository git apply skips paths outside the current directory).
        (cd "$SRC" && GIT_CEILING_DIRECTORIES=$WORK git apply --whitespace=nowarn "$p")
    done
    echo "$STAMP" >"$WORK/src.stamp"
fi

# --- loader -------------------------------------------------------------------
# Unpatched: its own copy, kept across patch changes.
LOADER_DIR=$WORK/loader
if [ "$(cat "$WORK/loader.stamp" 2>/dev/null)" != "$HERMIT_SRC" ]; then
    rm -rf "$LOADER_DIR" "$WORK/loader.stamp"
    cp -r "$HERMIT_SRC/loader" "$LOADER_DIR"
    echo "$HERMIT_SRC" >"$WORK/loader.stamp"
fi
case "$ARCH" in
    x86_64)
        LOADER=$LOADER_DIR/target/release/hermit-loader-x86_64-multiboot
        if [ ! -f "$LOADER" ]; then
            echo "run.sh: building the loader (x86_64-multiboot)"
            (cd "$LOADER_DIR" && flock -s /tmp/pagepin-quiet.lock \
                cargo +"$TOOLCHAIN" xtask build --target x86_64-multiboot --release)
        fi
        ;;
    aarch64)
        # The loader's xtask runs `rustup target add aarch64-unknown-none-softfloat`,
        # whose rust-std this nightly does not offer; the same cargo command
        # as the xtask's, with core and alloc built from source instead.
        LOADER=$LOADER_DIR/target/aarch64-unknown-none-softfloat/release/hermit-loader
        if [ ! -f "$LOADER" ]; then
            echo "run.sh: building the loader (aarch64-elf, -Zbuild-std)"
            (cd "$LOADER_DIR" && CARGO_ENCODED_RUSTFLAGS=$(printf '%s\x1f%s' \
                -Crelocation-model=static -Clink-arg=--image-base=0x40400000) \
                flock -s /tmp/pagepin-quiet.lock cargo +"$TOOLCHAIN" build \
                --target=aarch64-unknown-none-softfloat -Zbuild-std=core,alloc \
                -Zbuild-std-features=compiler-builtins-mem --features=elf --release)
        fi
        ;;
esac

# --- app (and kernel) ---------------------------------------------------------
FEATURES=()
case "$ARCH" in
    aarch64) FEATURES+=(semihosting) ;;
esac
if [ -n "$BROKEN" ]; then
    FEATURES+=("hermit/pagepin-$BROKEN")
fi
APP_TARGET=$WORK/app-$ARCH${BROKEN:+-$BROKEN}
echo "run.sh: building the app and the patched kernel ($ARCH${BROKEN:+, $BROKEN})"
(cd "$HERE/app" && CARGO_TARGET_DIR=$APP_TARGET flock -s /tmp/pagepin-quiet.lock \
    cargo +"$TOOLCHAIN" build -Zbuild-std=std,panic_abort --target "$ARCH-unknown-hermit" \
    --release ${FEATURES[@]+--features "$(IFS=,; echo "${FEATURES[*]}")"})
APP=$APP_TARGET/$ARCH-unknown-hermit/release/pagepin-hermit-app

# --- QEMU ---------------------------------------------------------------------
QEMU_CACHE=${QEMU_CACHE:-$REPO/target/qemu-$ARCH}
qemu_fetch "$ARCH" "$QEMU_CACHE"
"$QEMU" --version | head -n 1

# --- boot ---------------------------------------------------------------------
LOG=$WORK/boot-$ARCH${BROKEN:+-$BROKEN}.log
# One boot: returns 0 for a clean pass, 1 for anything else; output in $LOG.
boot() {
    local seed=$1 status summary t0 args
    args="-- seconds=$SECONDS_RUN seed=$seed"
    echo "run.sh: booting $ARCH, -smp 4, $args"
    t0=$(date +%s)
    set +e
    case "$ARCH" in
        x86_64)
            timeout "$BOOT_TIMEOUT" "$QEMU" \
                -L "$QEMU_CACHE/root/usr/share/qemu" -L "$QEMU_CACHE/root/usr/share/seabios" \
                -cpu Skylake-Client -smp 4 -m 128M \
                -display none -serial stdio -monitor none -nic none -no-reboot \
                -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
                -kernel "$LOADER" -initrd "$APP" -append "$args" </dev/null >"$LOG" 2>&1
            status=$?
            ;;
        aarch64)
            timeout "$BOOT_TIMEOUT" "$QEMU" -L "$QEMU_CACHE/root/usr/share/qemu" \
                -machine virt,gic-version=3 -cpu max,lpa2=off -smp 4 -m 256M -semihosting \
                -display none -serial stdio -monitor none -nic none -no-reboot \
                -kernel "$LOADER" -device "guest-loader,addr=0x48000000,initrd=$APP" \
                -append "$args" </dev/null >"$LOG" 2>&1
            status=$?
            ;;
    esac
    set -e
    summary=$(tr -d '\r' <"$LOG" | grep '^pagepin-hermit arch=' | tail -n 1 || true)
    echo "run.sh: QEMU exit status $status after $(($(date +%s) - t0)) s"
    echo "run.sh: $summary"
    # x86_64: isa-debug-exit gives (code << 1) | 1, and Hermit's exit(0) is 3.
    # aarch64: semihosting gives the app's exit code.
    case "$ARCH:$status" in
        x86_64:3|aarch64:0) ;;
        *:124) echo "run.sh: TIMEOUT after $BOOT_TIMEOUT s"; return 1 ;;
        *) echo "run.sh: FAILED: QEMU exit status $status"; return 1 ;;
    esac
    if ! tr -d '\r' <"$LOG" | grep -v '^$' | grep -v '^\[' | grep -v '^exit status' \
        | grep -v '^Number of interrupts' | tail -n 1 | grep -q '^pagepin-hermit arch='; then
        echo "run.sh: FAILED: the summary is not the app's last line"
        return 1
    fi
    case "$summary" in
        *" pins=0 "*|*" munmaps=0 "*|*" waited=0 "*)
            echo "run.sh: FAILED: no pin met a munmap: $summary"; return 1 ;;
        "pagepin-hermit arch=$ARCH cpus=4 pins="*" munmaps="*" waited="*" violations=0") ;;
        *) echo "run.sh: FAILED: not a clean summary: $summary"; return 1 ;;
    esac
}

if [ -z "$BROKEN" ]; then
    SEED=${SEED:-$(($(date +%s) % 100000))}
    if boot "$SEED"; then
        tr -d '\r' <"$LOG" | grep -v '^\[LOADER\]'
        echo "run.sh: $ARCH boot passed"
    else
        tr -d '\r' <"$LOG" | tail -n 60
        exit 1
    fi
else
    detected=0
    for run in $(seq 1 "$RUNS"); do
        seed=$(( ${SEED:-$(date +%s)} + run ))
        if boot "$seed"; then
            echo "run.sh: run $run: NOT detected"
        else
            detected=$((detected + 1))
            echo "run.sh: run $run: detected: $(tr -d '\r' <"$LOG" | grep -m 1 -E '^violation|panicked|left the free list' || echo "(no message; see the status above)")"
            echo "run.sh:     the app's first: $(tr -d '\r' <"$LOG" | grep -m 1 '^violation' || echo none)"
        fi
    done
    echo "run.sh: $BROKEN ($ARCH): detected in $detected of $RUNS boots"
fi
