#!/usr/bin/env bash
# Runs the strata-store benchmarks (tests/benches/store.rs) and prints every result criterion
# recorded as one Markdown table: median, median absolute deviation, the range of the
# per-iteration sample means and, for byte-sized cases, MiB/s at the median.
#
#   scripts/bench-ingest.sh                 # everything (about 10 minutes on 2 cores)
#   scripts/bench-ingest.sh 'ingest/'       # a criterion filter
#   scripts/bench-ingest.sh --report-only   # only print what target/criterion holds
#
# Needs cargo and jq. Scratch stores go under STRATA_BENCH_DIR (default /var/tmp); it must be
# on a real disk (not tmpfs), or every fsync figure is meaningless.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" != "--report-only" ]]; then
    dir="${STRATA_BENCH_DIR:-/var/tmp}"
    echo "bench directory: $dir on $(findmnt -n -o FSTYPE -T "$dir")" >&2
    cargo bench -p strata-tests --bench store -- "$@" >&2
fi

target=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)

echo "| benchmark | median | MAD | sample range | MiB/s at median |"
echo "|---|---|---|---|---|"
find "$target/criterion" -path '*/new/benchmark.json' | sort | while read -r bench; do
    d=$(dirname "$bench")
    jq -r -s '
        # Three significant digits in the largest unit that keeps the value >= 1.
        def sig3: if . >= 100 then round elif . >= 10 then . * 10 | round / 10
                  else . * 100 | round / 100 end;
        def t: if . < 1e3 then "\(sig3) ns"
               elif . < 1e6 then "\(. / 1e3 | sig3) µs"
               elif . < 1e9 then "\(. / 1e6 | sig3) ms"
               else "\(. / 1e9 | sig3) s" end;
        .[0] as $b | .[1] as $e | .[2] as $s
        | [range(0; $s.iters | length) as $i | $s.times[$i] / $s.iters[$i]] as $per
        | $e.median.point_estimate as $med
        # A phase of an ingest is not a throughput of its bytes.
        | (if $b.group_id == "ingest_phases" then null else $b.throughput.Bytes end) as $bytes
        | "| \($b.full_id) | \($med | t) | \($e.median_abs_dev.point_estimate | t) | "
          + "\($per | min | t) – \($per | max | t) | "
          + (if $bytes then "\($bytes / ($med / 1e9) / 1048576 | sig3)" else "" end)
          + " |"
    ' "$bench" "$d/estimates.json" "$d/sample.json"
done
