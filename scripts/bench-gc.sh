#!/usr/bin/env bash
# Runs the garbage-collection benchmarks (tests/benches/gc.rs) and prints their figures as
# Markdown tables, then whether the project's targets are met at 100 000 sets:
# write-lock hold (the sweep's write transaction) < 50 ms, whole collection < 2 s, p99 latency
# of `prepare` during collections < 100 ms.
#
#   scripts/bench-gc.sh                  # everything, 10 to 100 000 sets (about an hour on 2 cores
#                                        # and this VM's ext4, most of it creating and removing
#                                        # millions of directories)
#   scripts/bench-gc.sh collect/         # a filter: criterion's for collect/, a substring for
#                                        # garbage/<N> and prepare/<N>
#   scripts/bench-gc.sh --report-only    # only print the tables of the last run's log
#
# Environment: STRATA_BENCH_DIR (default /var/tmp; must be a real disk, not tmpfs), the
# STRATA_BENCH_GC_* variables of tests/benches/gc.rs, and STRATA_BENCH_GC_LOG (default
# <target>/bench-gc.log), where the machine, the command and the bench's whole output go.
# STRATA_BENCH_GC_BIN runs that already built bench executable instead of `cargo bench` (to keep
# measuring one build while the sources change). Needs cargo and jq.
set -euo pipefail
cd "$(dirname "$0")/.."

target=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
log="${STRATA_BENCH_GC_LOG:-$target/bench-gc.log}"

if [[ "${1:-}" != "--report-only" ]]; then
    dir="${STRATA_BENCH_DIR:-/var/tmp}"
    {
        echo "date: $(date -u +%FT%TZ)"
        echo "nproc: $(nproc)"
        echo "cpu: $(lscpu | sed -n 's/^Model name: *//p')"
        echo "kernel: $(uname -r)"
        echo "bench directory: $dir: $(findmnt -n -o SOURCE,FSTYPE,OPTIONS -T "$dir")"
        echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
        if [[ -n "${STRATA_BENCH_GC_BIN:-}" ]]; then
            echo "command: $STRATA_BENCH_GC_BIN --bench $*"
        else
            echo "command: cargo bench -p strata-tests --bench gc -- $*"
        fi
        echo "code: $(git rev-parse --short HEAD) with $(git status --porcelain | wc -l) changed paths"
        env | grep '^STRATA_BENCH' | sed 's/^/env: /' || true
    } | tee "$log" >&2
    if [[ -n "${STRATA_BENCH_GC_BIN:-}" ]]; then
        CARGO_TARGET_DIR="$target" "$STRATA_BENCH_GC_BIN" --bench "$@" 2>&1 | tee -a "$log" >&2
    else
        cargo bench -p strata-tests --bench gc -- "$@" 2>&1 | tee -a "$log" >&2
    fi
    echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$log" >&2
fi

# `key=value` fields of the bench's `strata-bench-gc:` lines.
field() { grep -o " $2=[^ ]*" <<<"$1" | head -1 | cut -d= -f2 || true; }
# Milliseconds as text: three significant digits, in seconds from 1 000 ms.
t() {
    awk -v v="$1" 'BEGIN {
        if (v == "") { print "–"; exit }
        if (v >= 1000) { s = v / 1000; printf (s >= 100 ? "%.0f s\n" : (s >= 10 ? "%.1f s\n" : "%.2f s\n")), s }
        else if (v >= 100) printf "%.0f ms\n", v
        else if (v >= 10) printf "%.1f ms\n", v
        else if (v >= 1) printf "%.2f ms\n", v
        else printf "%.0f µs\n", v * 1000 }'
}
lines() { grep "^strata-bench-gc: $1 " "$log" || true; }
# The phase columns of a collect or garbage line: whole GC median (max) | mark median |
# sweep median (max) | cleanup median.
phases() {
    echo "$(t "$(field "$1" total_median_ms)") ($(t "$(field "$1" total_max_ms)")) | $(t "$(field "$1" mark_median_ms)") | $(t "$(field "$1" sweep_median_ms)") ($(t "$(field "$1" sweep_max_ms)")) | $(t "$(field "$1" cleanup_median_ms)")"
}

grep -E '^(date|nproc|cpu|kernel|bench directory|load at [a-z]+|command|code|env):' "$log" | sed 's/^/    /'
echo

echo "**collect/** (criterion; every set live, nothing to delete; phases over every collection run, warm-up included)"
echo
echo "| sets | criterion median | collections | whole GC median (max) | mark median | sweep = write-lock hold, median (max) | cleanup median |"
echo "|---|---|---|---|---|---|---|"
while read -r l; do
    [[ -n "$l" ]] || continue
    n=$(field "$l" sets)
    est="$target/criterion/collect/${n}_sets/new/estimates.json"
    crit=""
    [[ -f "$est" ]] && crit=$(t "$(jq '.median.point_estimate / 1e6' "$est")")
    echo "| $n | ${crit:-–} | $(field "$l" runs) | $(phases "$l") |"
done <<<"$(lines collect)"
echo

echo "**garbage/** (one collection per fresh store; half the sets have no image and no container)"
echo
echo "| sets | garbage sets | records removed | files removed | runs | whole GC median (max) | mark median | sweep = write-lock hold, median (max) | cleanup median |"
echo "|---|---|---|---|---|---|---|---|---|"
while read -r l; do
    [[ -n "$l" ]] || continue
    echo "| $(field "$l" sets) | $(field "$l" garbage_sets) | $(field "$l" records_removed) | $(field "$l" files_removed) | $(field "$l" runs) | $(phases "$l") |"
done <<<"$(lines garbage)"
echo

echo "**prepare/** (native prepare on a committed chain top, one thread; remove untimed)"
echo
echo "| sets | window | prepares | p50 | p99 | max |"
echo "|---|---|---|---|---|---|"
while read -r l; do
    [[ -n "$l" ]] || continue
    w=$(field "$l" window)
    [[ "$w" == during_gc ]] && w="during $(field "$l" collects) collections"
    [[ "$w" == baseline ]] && w="no collection ($(field "$l" seconds) s)"
    echo "| $(field "$l" sets) | $w | $(field "$l" prepares) | $(t "$(field "$l" p50_ms)") | $(t "$(field "$l" p99_ms)") | $(t "$(field "$l" max_ms)") |"
done <<<"$(lines prepare)"
while read -r l; do
    [[ -n "$l" ]] || continue
    echo
    echo "Collections during that window: whole GC median $(t "$(field "$l" total_median_ms)") (max $(t "$(field "$l" total_max_ms)")), sweep median $(t "$(field "$l" sweep_median_ms)") (max $(t "$(field "$l" sweep_max_ms)"))."
done <<<"$(lines prepare-collects)"
echo

# Targets, at 100 000 sets.
verdict() { awk -v v="$1" -v lim="$2" 'BEGIN { if (v == "") print "not measured"; else if (v + 0 < lim + 0) print "**met**"; else print "**missed**" }'; }
c=$(lines "collect sets=100000")
p=$(lines "prepare sets=100000 window=during_gc")
echo "**Targets at 100 000 sets**"
echo
echo "| target | measured | verdict |"
echo "|---|---|---|"
hold=$(field "$c" sweep_max_ms)
whole=$(field "$c" total_median_ms)
p99=$(field "$p" p99_ms)
echo "| write-lock hold < 50 ms (largest sweep of collect/100000_sets) | $(t "$hold") | $(verdict "$hold" 50) |"
echo "| whole GC < 2 s (median of collect/100000_sets) | $(t "$whole") | $(verdict "$whole" 2000) |"
echo "| p99 prepare latency during GC < 100 ms | $(t "$p99") | $(verdict "$p99" 100) |"
