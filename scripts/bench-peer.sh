#!/usr/bin/env bash
# strata (gcctl) side by side with containerd 1.6, in one run, on one file system.
#
#   scripts/bench-peer.sh [IMAGES_DIR] [OUT_DIR]
#       IMAGES_DIR  default /tmp/peer-images (built with ../shared/peers/make-images.sh if
#                   it has no images.json)
#       OUT_DIR     default bench-results/ in the repository
#   env: IMAGES="small deep big many-files"   order matters: many-files (100k files, whose
#                  deletion slows later file creation on ext4) goes last
#        REPEAT=3      strata and containerd import+unpack runs for small and deep
#                      (big and many-files: containerd once, strata twice, before and after it)
#        LOOP_N=1000   prepare/write/commit iterations per image
#        BENCH_WORK=/tmp/ctd-bench       containerd's roots (bench-containerd.sh)
#        STRATA_WORK=$BENCH_WORK-strata  strata's roots and the scratch dirs; must be on the
#                      same file system as BENCH_WORK (checked)
#        QUIET_MAX=900 seconds to wait for a quiet machine (no cargo/rustc/clippy-driver,
#                      1-minute load < QUIET_LOAD=0.7) before each measured phase
#        PEERS=../shared/peers
#
# Writes OUT_DIR/strata-FSTYPE.tsv and OUT_DIR/containerd-FSTYPE.tsv (columns: step image run
# metric value unit, the peers' format), OUT_DIR/summary.md (peers/summarize.py of both) and
# OUT_DIR/report.md (the ratio tables strata/containerd).
#
# What is timed, per image (strata first, then containerd, then strata again, so that both see
# the same file-system state; see peers/README.md on ext4's drifting file-creation cost):
#   i    `gcctl --root FRESH import IMAGE.tar --unpack` (overlay) under /usr/bin/time -v, after
#        `sync` and with the archive pre-read, exactly as bench-containerd.sh times
#        `ctr images import`. gcctl has no daemon: its own max RSS and user+sys CPU are the
#        work's, and are written under containerd's metric names (daemon_peak_rss_kb,
#        daemon_cpu_s) so that summarize.py lines them up.
#        containerd: bench-containerd.sh STEPS=i (daemon peak RSS via VmHWM, daemon CPU).
#   ii   `gcctl import` without --unpack, then `gcctl unpack NAME` (the two phases).
#        containerd: bench-containerd.sh STEPS=ii (import --no-unpack, ctr snapshots unpack).
#   iii  LOOP_N x (prepare on the top chain ID, write a small file into the upperdir, commit):
#        the whole loop under /usr/bin/time (mean per iteration, as bench-containerd.sh), and
#        each prepare and commit timed with $EPOCHREALTIME for p50/p99. containerd's script
#        gives only the mean, so the same per-operation loop runs with ctr on a private daemon.
#        Both sides pay a process start per command (gcctl, ctr).
#   L    the largest gzip layer of big: `gzip -dc LAYER | tar -x -C DIR` (the limit) against
#        `gcctl unpack` of a one-layer image made of that blob (imported untimed first), and
#        `gzip -dc LAYER > /dev/null` (decompression alone); MiB/s of the uncompressed tar.
#   0    cost of one gcctl invocation (200 x `gcctl ns ls`); containerd: bench-containerd.sh
#        STEPS=0 (200 x `ctr version` and a file-system baseline).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

# ------------------------------------------------------------------ sub-commands
case ${1:-} in
  __sloop) # GCCTL ROOT PARENT N PREFIX TIMES : strata prepare -> write -> commit, timed per op
    g=$2 root=$3 parent=$4 n=$5 p=$6 tf=$7
    : >"$tf"
    for ((i = 1; i <= n; i++)); do
      t0=$EPOCHREALTIME
      out=$("$g" --root "$root" snapshots prepare "$p-act-$i" "$parent")
      t1=$EPOCHREALTIME
      up=${out#*upperdir=}
      up=${up%%,*}
      [[ -d $up ]] || { echo "no upperdir in: $out" >&2; exit 1; }
      echo "small change $i" >"$up/change-$i.txt"
      t2=$EPOCHREALTIME
      "$g" --root "$root" snapshots commit "$p-c-$i" "$p-act-$i" >/dev/null
      t3=$EPOCHREALTIME
      echo "$t0 $t1 $t2 $t3" >>"$tf"
    done
    exit 0 ;;
  __cloop) # SOCK PARENT N PREFIX TIMES : the same with ctr (upperdir parsed as bench-containerd.sh)
    sock=$2 parent=$3 n=$4 p=$5 tf=$6
    : >"$tf"
    for ((i = 1; i <= n; i++)); do
      t0=$EPOCHREALTIME
      out=$(ctr -a "$sock" snapshots prepare --mounts "$p-act-$i" "$parent")
      t1=$EPOCHREALTIME
      up=${out#*upperdir=}
      up=${up%%\"*}
      [[ -d $up ]] || { echo "no upperdir in: $out" >&2; exit 1; }
      echo "small change $i" >"$up/change-$i.txt"
      t2=$EPOCHREALTIME
      ctr -a "$sock" snapshots commit "$p-c-$i" "$p-act-$i" >/dev/null
      t3=$EPOCHREALTIME
      echo "$t0 $t1 $t2 $t3" >>"$tf"
    done
    exit 0 ;;
  __repeat) # K cmd... (output discarded)
    k=$2; shift 2
    for ((i = 0; i < k; i++)); do "$@" >/dev/null; done
    exit 0 ;;
  __gztar) # LAYER DIR
    gzip -dc "$2" | tar -x -C "$3"
    exit 0 ;;
  __gzcat) # LAYER
    gzip -dc "$2" >/dev/null
    exit 0 ;;
esac

PEERS=${PEERS:-$(cd "$REPO/../shared/peers" && pwd)}
IMGDIR=${1:-/tmp/peer-images}
OUTDIR=${2:-$REPO/bench-results}
IMAGES=${IMAGES:-small deep big many-files}
REPEAT=${REPEAT:-3}
LOOP_N=${LOOP_N:-1000}
QUIET_MAX=${QUIET_MAX:-900}
QUIET_LOAD=${QUIET_LOAD:-0.7}
WORK=${BENCH_WORK:-/tmp/ctd-bench}
SWORK=${STRATA_WORK:-${WORK%/}-strata}
export BENCH_WORK=$WORK

# ------------------------------------------------------------------ preparation
need=()
for p in containerd time python3 gzip tar; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if ((${#need[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q "${need[@]}"
fi
[[ -f $IMGDIR/images.json ]] || "$PEERS/make-images.sh" "$IMGDIR"
IMGDIR=$(cd "$IMGDIR" && pwd)

echo "== building gcctl (release)" >&2
(cd "$REPO" && cargo build --release -p gcctl >&2)
mkdir -p "$OUTDIR" "$WORK" "$SWORK"
OUTDIR=$(cd "$OUTDIR" && pwd)
# a private copy, so that a rebuild by someone else during the run cannot change the binary
G=$SWORK/gcctl
cp "$REPO/target/release/gcctl" "$G"
REV=$(cd "$REPO" && git rev-parse --short HEAD)$(cd "$REPO" && git diff --quiet HEAD -- cli snapshotter store Cargo.lock || echo "+dirty")

[[ $(stat -c %d "$WORK") == $(stat -c %d "$SWORK") ]] ||
  { echo "BENCH_WORK ($WORK) and STRATA_WORK ($SWORK) are on different file systems" >&2; exit 2; }
FSTYPE=$(findmnt -n -o FSTYPE --target "$WORK" 2>/dev/null | tail -1)
[[ -n $FSTYPE ]] || FSTYPE=$(stat -f -c %T "$WORK")
FSTYPE=${FSTYPE//\//-}
FSOPTS=$(findmnt -n -o OPTIONS --target "$WORK" 2>/dev/null | tail -1)
OUT=$OUTDIR/strata-$FSTYPE.tsv
COUT=$OUTDIR/containerd-$FSTYPE.tsv
PARTS=$OUTDIR/parts
LOGDIR=$OUTDIR/strata-$FSTYPE-logs
rm -rf "$PARTS" "$LOGDIR"
mkdir -p "$PARTS" "$LOGDIR"

{
  echo "# strata peer benchmark $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "# host: nproc=$(nproc) cpu=$(lscpu | awk -F': *' '/^Model name/{print $2; exit}') kernel=$(uname -r) mem=$(awk '/MemTotal/{print $2" kB"}' /proc/meminfo)"
  echo "# gcctl $REV (release), $(containerd --version)"
  echo "# fs of $WORK and $SWORK: $FSTYPE on $(df --output=source "$WORK" | tail -1) ($FSOPTS)"
  echo "# images: $IMGDIR  LOOP_N=$LOOP_N REPEAT=$REPEAT"
  echo "# strata has no daemon: *.daemon_peak_rss_kb and *.client_maxrss_kb are gcctl's own max RSS"
  echo "# (/usr/bin/time -v), *.daemon_cpu_s is gcctl's user+sys CPU; all work is in that process."
  printf 'step\timage\trun\tmetric\tvalue\tunit\n'
} >"$OUT"
RUN=1
emit() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$RUN" "$3" "$4" "$5" | tee -a "$OUT"; }
note() { echo "# $*" | tee -a "$OUT"; }

LOOPD=
cleanup() {
  [[ -n $LOOPD && -d $LOOPD ]] && "$PEERS/containerd-down.sh" "$LOOPD" --purge >/dev/null 2>&1 || true
  # strata mounts nothing during import/unpack/prepare; unmount defensively anyway
  awk -v d="$SWORK/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do umount "$m" || umount -l "$m"; done
  rm -rf "$SWORK"
}
trap cleanup EXIT

jq_img() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))[sys.argv[2]]; print(eval(sys.argv[3]))' "$IMGDIR/images.json" "$@"; }
chain_top() {
  python3 -c '
import json,sys,hashlib
L=json.load(open(sys.argv[1]))[sys.argv[2]]["layer_detail"]
c=L[0]["diff_id"]
for l in L[1:]: c="sha256:"+hashlib.sha256((c+" "+l["diff_id"]).encode()).hexdigest()
print(c)' "$IMGDIR/images.json" "$1"
}

# wait for a quiet machine: no compiler running and a low 1-minute load
wait_quiet() { # PHASE
  local t0 waited busy load
  t0=$(date +%s)
  while :; do
    busy=$(for n in cargo rustc clippy-driver; do pgrep -x -d, "$n" || true; done | paste -sd, -)
    load=$(awk '{print $1}' /proc/loadavg)
    waited=$(($(date +%s) - t0))
    if [[ -z $busy ]] && awk -v l="$load" -v m="$QUIET_LOAD" 'BEGIN{exit !(l < m)}'; then
      note "phase $1: quiet after ${waited}s (load1 $load)"
      return 0
    fi
    if ((waited >= QUIET_MAX)); then
      note "phase $1: NOT quiet after ${waited}s, proceeding: load1 $load, compiler pids: ${busy:-none}"
      return 0
    fi
    sleep 20
  done
}

# file-creation cost right now (the same probe as bench-containerd.sh's fs_probe)
FSPROBE='
import os, shutil, sys, time
d = os.path.join(sys.argv[1], "fs-baseline"); n = int(sys.argv[2])
shutil.rmtree(d, ignore_errors=True); os.makedirs(d)
t = time.perf_counter()
for i in range(n // 50):
    os.mkdir("%s/d%d" % (d, i))
    for j in range(50):
        with open("%s/d%d/f%d" % (d, i, j), "wb") as f:
            f.write(b"x" * 1000)
print("create_file_us %.0f us" % ((time.perf_counter() - t) / (n + n // 50) * 1e6))
t = time.perf_counter(); shutil.rmtree(d)
print("remove_file_us %.0f us" % ((time.perf_counter() - t) / (n + n // 50) * 1e6))
'
fs_probe() { python3 -c "$FSPROBE" "$SWORK" 1000 | while read -r m v u; do emit "$1" "$2" "fs_probe.$m" "$v" "$u"; done; }

LAST_WALL=
timed() { # STEP IMAGE LABEL cmd... : wall, max RSS and CPU of a process that does all the work
  local step=$1 img=$2 label=$3; shift 3
  local tf=$SWORK/time.$$ lf=$LOGDIR/$step-$img-$label-$RUN.out rc=0
  sync
  /usr/bin/time -v -o "$tf" "$@" >"$lf" 2>&1 || rc=$?
  local wall rss cpu
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/{n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$tf")
  rss=$(awk -F': ' '/Maximum resident set size/{print $2}' "$tf")
  cpu=$(awk -F': ' '/User time/{u=$2} /System time/{s=$2} END{printf "%.2f", u+s}' "$tf")
  LAST_WALL=$wall
  emit "$step" "$img" "$label.wall_s" "$wall" s
  emit "$step" "$img" "$label.client_maxrss_kb" "$rss" kB
  emit "$step" "$img" "$label.daemon_peak_rss_kb" "$rss" kB
  emit "$step" "$img" "$label.daemon_cpu_s" "$cpu" s
  if ((rc != 0)); then
    emit "$step" "$img" "$label.exit_code" "$rc" rc
    tail -5 "$lf" | sed 's/^/#   /' | tee -a "$OUT"
  fi
  rm -f "$tf"
  return "$rc"
}

# p50/p99 (nearest rank) of prepare, commit and whole iterations from a loop's times file
percentiles() { # TIMES -> lines "metric value unit"
  python3 - "$1" <<'EOF'
import math, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
def pct(v, p):
    v = sorted(v); return v[max(0, math.ceil(p / 100 * len(v)) - 1)]
ops = {"prepare": [(r[1] - r[0]) * 1e3 for r in rows],
       "commit": [(r[3] - r[2]) * 1e3 for r in rows],
       "iter": [(r[3] - r[0]) * 1e3 for r in rows]}
for k, v in ops.items():
    print("%s_p50_ms %.2f ms" % (k, pct(v, 50)))
    print("%s_p99_ms %.2f ms" % (k, pct(v, 99)))
    print("%s_max_ms %.2f ms" % (k, max(v)))
    print("%s_mean_ms %.2f ms" % (k, sum(v) / len(v)))
print("iterations %d count" % len(rows))
EOF
}

# containerd through its own script, one image and step at a time, into PARTS
ctd_bench() { # STEPS IMAGE TAG
  STEPS=$1 IMAGES=$2 REPEAT=$REPEAT LOOP_N=$LOOP_N \
    "$PEERS/bench-containerd.sh" "$IMGDIR" "$PARTS/containerd-$3.tsv" >"$PARTS/containerd-$3.stdout" 2>&1 ||
    { echo "bench-containerd.sh $1 $2 failed; see $PARTS/containerd-$3.stdout" >&2; tail -20 "$PARTS/containerd-$3.stdout" >&2; exit 1; }
  note "containerd steps $1 for $2: $PARTS/containerd-$3.tsv"
}

T0=$(date +%s)
# ------------------------------------------------------------------ L: one-layer image of big's largest layer
BIG_LAYER=$(python3 -c '
import json,sys
L=json.load(open(sys.argv[1]))["big"]["layer_detail"]
l=max(L, key=lambda l: l["size"]); print(l["digest"], l["diff_id"], l["size"], l["tar_size"])' "$IMGDIR/images.json")
read -r LDIG LDIFF LSIZE LTAR <<<"$BIG_LAYER"
LBLOB=$IMGDIR/big/blobs/sha256/${LDIG#sha256:}
LLAYOUT=$SWORK/big-layer
python3 - "$LLAYOUT" "$LBLOB" "$LDIG" "$LDIFF" "$LSIZE" <<'EOF'
import hashlib, json, os, shutil, sys
out, blob, dig, diff, size = sys.argv[1:6]
b = os.path.join(out, "blobs", "sha256"); os.makedirs(b, exist_ok=True)
shutil.copyfile(blob, os.path.join(b, dig.split(":")[1]))
def put(obj):
    data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    d = hashlib.sha256(data).hexdigest()
    open(os.path.join(b, d), "wb").write(data)
    return {"digest": "sha256:" + d, "size": len(data)}
cfg = put({"architecture": "amd64", "os": "linux", "config": {},
           "rootfs": {"type": "layers", "diff_ids": [diff]}})
man = put({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
           "config": dict(cfg, mediaType="application/vnd.oci.image.config.v1+json"),
           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                       "digest": dig, "size": int(size)}]})
json.dump({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
           "manifests": [dict(man, mediaType="application/vnd.oci.image.manifest.v1+json",
                              annotations={"io.containerd.image.name": "docker.io/peers/big-layer:latest",
                                           "org.opencontainers.image.ref.name": "latest"})]},
          open(os.path.join(out, "index.json"), "w"))
json.dump({"imageLayoutVersion": "1.0.0"}, open(os.path.join(out, "oci-layout"), "w"))
EOF

wait_quiet "0+L"
note "step 0: cost of one gcctl invocation (process start + open the store + list namespaces)"
R0=$SWORK/s0
"$G" --root "$R0" import "$IMGDIR/small.tar" >/dev/null
timed 0 - gcctl_ns_ls_x200 bash "$0" __repeat 200 "$G" --root "$R0" ns ls
emit 0 - gcctl_invocation_ms "$(awk -v w="$LAST_WALL" 'BEGIN{printf "%.2f", w*1000/200}')" ms
ctd_bench 0 small step0

note "step L: big's largest layer $LDIG ($LSIZE B gzip, $LTAR B uncompressed tar)"
emit L big-layer uncompressed_tar_bytes "$LTAR" B
emit L big-layer compressed_bytes "$LSIZE" B
cat "$LBLOB" >/dev/null
for RUN in 1 2; do
  timed L big-layer gunzip_only bash "$0" __gzcat "$LBLOB"
  emit L big-layer gunzip_only.mib_s "$(awk -v b="$LTAR" -v w="$LAST_WALL" 'BEGIN{printf "%.1f", b/1048576/w}')" MiB/s
  D=$SWORK/gztar-$RUN
  mkdir -p "$D"
  timed L big-layer gzip_tar bash "$0" __gztar "$LBLOB" "$D"
  emit L big-layer gzip_tar.mib_s "$(awk -v b="$LTAR" -v w="$LAST_WALL" 'BEGIN{printf "%.1f", b/1048576/w}')" MiB/s
  R=$SWORK/layer-$RUN
  "$G" --root "$R" import "$LLAYOUT" >"$LOGDIR/L-import-$RUN.out" 2>&1
  timed L big-layer strata_unpack "$G" --root "$R" unpack docker.io/peers/big-layer:latest
  emit L big-layer strata_unpack.mib_s "$(awk -v b="$LTAR" -v w="$LAST_WALL" 'BEGIN{printf "%.1f", b/1048576/w}')" MiB/s
done
RUN=1

# ------------------------------------------------------------------ per image: i, ii, iii
for img in $IMAGES; do
  A=$(jq_img "$img" 'd["archive"]')
  NAME=$(jq_img "$img" 'd["images"][0]')
  TOP=$(chain_top "$img")
  before=1 after=1
  [[ $img == small || $img == deep ]] && after=$((REPEAT - 1))

  wait_quiet "$img-i"
  strata_i() {
    note "step i: $img run $RUN: gcctl import --unpack (overlay) on a fresh root"
    cat "$A" >/dev/null
    fs_probe i "$img"
    local R=$SWORK/i-$img-$RUN
    timed i "$img" import_unpack "$G" --root "$R" import "$A" --unpack
    "$G" --root "$R" snapshots info "$TOP" >/dev/null || { note "top chain ID $TOP missing after unpack"; exit 1; }
    emit i "$img" after_import.blob_bytes "$(du -sb "$R/content/blobs" | cut -f1)" B
    emit i "$img" after_import.snapshot_bytes "$(du -sb "$R/snapshots" | cut -f1)" B
    emit i "$img" after_import.meta_db_bytes "$(stat -c %s "$R/meta.redb")" B
  }
  for ((RUN = 1; RUN <= before; RUN++)); do strata_i; done
  ctd_bench i "$img" "i-$img"
  for ((; RUN <= before + after; RUN++)); do strata_i; done
  RUN=1

  wait_quiet "$img-ii"
  note "step ii/iii: $img: gcctl import, gcctl unpack, then $LOOP_N x prepare/write/commit on $TOP"
  R=$SWORK/ii-$img
  cat "$A" >/dev/null
  timed ii "$img" import_no_unpack "$G" --root "$R" import "$A"
  fs_probe ii "$img"
  timed ii "$img" unpack_only "$G" --root "$R" unpack "$NAME"
  TF=$LOGDIR/iii-$img-times.txt
  timed iii "$img" prepare_commit_x$LOOP_N bash "$0" __sloop "$G" "$R" "$TOP" "$LOOP_N" p "$TF"
  emit iii "$img" prepare_commit_per_iter_ms "$(awk -v w="$LAST_WALL" -v n="$LOOP_N" 'BEGIN{printf "%.2f", w*1000/n}')" ms
  percentiles "$TF" | while read -r m v u; do emit iii "$img" "$m" "$v" "$u"; done

  ctd_bench ii "$img" "ii-$img"

  note "step iii: $img: containerd per-operation loop ($LOOP_N x ctr prepare/write/commit) on a private daemon"
  LOOPD=$SWORK/ctd-loop-$img
  "$PEERS/containerd-up.sh" "$LOOPD" >/dev/null
  ctr -a "$LOOPD/containerd.sock" images import --snapshotter overlayfs "$A" >"$LOGDIR/ctd-loop-$img-import.out" 2>&1
  CPID=$(cat "$LOOPD/containerd.pid")
  c0=$(awk '{print $14+$15}' "/proc/$CPID/stat")
  CTF=$LOGDIR/iii-$img-ctr-times.txt
  sync
  t0=$EPOCHREALTIME
  bash "$0" __cloop "$LOOPD/containerd.sock" "$TOP" "$LOOP_N" q "$CTF"
  t1=$EPOCHREALTIME
  c1=$(awk '{print $14+$15}' "/proc/$CPID/stat")
  {
    printf 'iii\t%s\t1\tctr_loop.wall_s\t%s\ts\n' "$img" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')"
    printf 'iii\t%s\t1\tctr_loop.daemon_cpu_s\t%s\ts\n' "$img" "$(awk -v a="$c0" -v b="$c1" -v t="$(getconf CLK_TCK)" 'BEGIN{printf "%.2f", (b-a)/t}')"
    percentiles "$CTF" | while read -r m v u; do printf 'iii\t%s\t1\t%s\t%s\t%s\n' "$img" "$m" "$v" "$u"; done
  } >"$PARTS/containerd-iii-$img-perop.rows"
  cat "$PARTS/containerd-iii-$img-perop.rows"
  "$PEERS/containerd-down.sh" "$LOOPD" --purge >/dev/null
  LOOPD=
done
emit total - bench_wall_s "$(($(date +%s) - T0))" s

# ------------------------------------------------------------------ containerd TSV: all parts in one file
{
  for f in "$PARTS"/containerd-*.tsv; do grep '^#' "$f" | sed "s|^# |# [$(basename "$f")] |"; done
  echo "# rows prepare_*/commit_*/iter_*/ctr_loop.* of step iii: bench-peer.sh's own per-operation ctr loop"
  printf 'step\timage\trun\tmetric\tvalue\tunit\n'
  for f in "$PARTS"/containerd-*.tsv; do grep -v '^#' "$f" | tail -n +2 | grep -v '^total'; done
  cat "$PARTS"/containerd-iii-*-perop.rows
} >"$COUT"

python3 "$PEERS/summarize.py" "$OUT" "$COUT" >"$OUTDIR/summary.md"

# ------------------------------------------------------------------ ratio tables
python3 - "$OUT" "$COUT" "$IMAGES" >"$OUTDIR/report.md" <<'EOF'
import csv, statistics, sys
def load(p):
    d = {}
    rows = [l for l in open(p) if not l.startswith("#")]
    for r in csv.DictReader(rows, delimiter="\t"):
        d.setdefault((r["step"], r["image"], r["metric"]), []).append(float(r["value"]))
    return d
S, C = load(sys.argv[1]), load(sys.argv[2])
images = sys.argv[3].split()
def med(d, k):
    v = d.get(k); return statistics.median(v) if v else None
def show(d, k, unit):
    v = d.get(k)
    if not v: return "not measured"
    f = (lambda x: "%.0f MiB" % (x / 1024)) if unit == "kB" else \
        (lambda x: "%.0f %s" % (x, unit)) if unit in ("µs", "MiB/s") else (lambda x: "%.2f %s" % (x, unit))
    s = f(statistics.median(v))
    if len(v) > 1: s += " (%s–%s, n=%d)" % (f(min(v)), f(max(v)), len(v))
    return s
def ratio(a, b):
    return "%.2f" % (a / b) if a is not None and b else "–"
rows = [
    ("import+unpack wall", ("i", "import_unpack.wall_s"), ("i", "import_unpack.wall_s"), "s"),
    ("import+unpack peak RSS (gcctl / containerd daemon)", ("i", "import_unpack.daemon_peak_rss_kb"), ("i", "import_unpack.daemon_peak_rss_kb"), "kB"),
    ("import+unpack CPU (gcctl user+sys / daemon)", ("i", "import_unpack.daemon_cpu_s"), ("i", "import_unpack.daemon_cpu_s"), "s"),
    ("  ctr client max RSS (containerd only)", None, ("i", "import_unpack.client_maxrss_kb"), "kB"),
    ("import only wall", ("ii", "import_no_unpack.wall_s"), ("ii", "import_no_unpack.wall_s"), "s"),
    ("unpack only wall", ("ii", "unpack_only.wall_s"), ("ii", "unpack_only.wall_s"), "s"),
    ("prepare p50", ("iii", "prepare_p50_ms"), ("iii", "prepare_p50_ms"), "ms"),
    ("prepare p99", ("iii", "prepare_p99_ms"), ("iii", "prepare_p99_ms"), "ms"),
    ("commit p50", ("iii", "commit_p50_ms"), ("iii", "commit_p50_ms"), "ms"),
    ("commit p99", ("iii", "commit_p99_ms"), ("iii", "commit_p99_ms"), "ms"),
    ("iteration (prepare+write+commit) p50", ("iii", "iter_p50_ms"), ("iii", "iter_p50_ms"), "ms"),
    ("iteration p99", ("iii", "iter_p99_ms"), ("iii", "iter_p99_ms"), "ms"),
    ("iteration mean, whole loop under /usr/bin/time", ("iii", "prepare_commit_per_iter_ms"), ("iii", "prepare_commit_per_iter_ms"), "ms"),
    ("fs probe before import (µs per file create)", ("i", "fs_probe.create_file_us"), ("i", "fs_probe.create_file_us"), "µs"),
    ("fs probe before unpack only", ("ii", "fs_probe.create_file_us"), ("ii", "fs_probe.create_file_us"), "µs"),
]
for img in images:
    print("\n#### %s\n" % img)
    print("| metric | strata | containerd 1.6 | strata / containerd |")
    print("|---|---|---|---|")
    for label, sk, ck, unit in rows:
        s = show(S, (sk[0], img, sk[1]), unit) if sk else "–"
        c = show(C, (ck[0], img, ck[1]), unit)
        r = ratio(med(S, (sk[0], img, sk[1])), med(C, (ck[0], img, ck[1]))) if sk else "–"
        print("| %s | %s | %s | %s |" % (label, s, c, r))
print("\n#### big's largest layer\n")
print("| | wall | MiB/s (uncompressed tar) | vs gzip -dc \\| tar -x |")
print("|---|---|---|---|")
g = med(S, ("L", "big-layer", "gzip_tar.mib_s"))
for label, m in (("gzip -dc > /dev/null (decompression only)", "gunzip_only"),
                 ("gzip -dc \\| tar -x (the limit)", "gzip_tar"),
                 ("strata: gcctl unpack of a one-layer image", "strata_unpack")):
    print("| %s | %s | %s | %s |" % (label, show(S, ("L", "big-layer", m + ".wall_s"), "s"),
          show(S, ("L", "big-layer", m + ".mib_s"), "MiB/s"), ratio(med(S, ("L", "big-layer", m + ".mib_s")), g)))
print("\n#### process start-up\n")
print("| | strata (`gcctl ns ls`) | containerd (`ctr version`) |")
print("|---|---|---|")
print("| one invocation | %s | %s |" % (show(S, ("0", "-", "gcctl_invocation_ms"), "ms"), show(C, ("0", "-", "ctr_invocation_ms"), "ms")))
b = (med(S, ("i", "big", "import_unpack.wall_s")), med(C, ("i", "big", "import_unpack.wall_s")))
if all(b):
    print("\nbig import+unpack: strata/containerd = %.3f (goal <= 0.35: %s)" % (b[0] / b[1], "met" if b[0] / b[1] <= 0.35 else "NOT met"))
EOF
cat "$OUTDIR/report.md"
echo "results: $OUT $COUT $OUTDIR/summary.md $OUTDIR/report.md" >&2
