#!/usr/bin/env bash
# Whole-run benchmark: strata against restic and rustic (when installed) on
# the same data, local repositories, side by side in one run.
#
#   bench/compare.sh [SET...]        # sets: small vm random (default: all)
#
# Data sets (built once under $BENCH_DIR, default /tmp/strata-bench):
#   small   a copy of /usr/share (and $BENCH_SMALL_EXTRA, e.g. /usr/lib)
#   vm      a 4 GiB sparse raw disk image holding an ext4 file system
#           populated from /usr/share/doc and /usr/lib/x86_64-linux-gnu
#   random  1 GiB of incompressible data in 16 files
#
# For each set and tool: initial backup, no-change re-run, re-run after 1% of
# the files changed, restore, repository size and peak memory (from
# /usr/bin/time). Each tool runs BENCH_REPS times (default 3), interleaved,
# on a fresh file system each time, and every timed step starts from an
# emptied page cache with its inputs read back in (see settle). Prints the
# medians with ratios against restic, and the throughput of
# `tar -cf - DATA | zstd -3 -T0 > /dev/null` as the floor.
#
# Run it as root on an otherwise idle machine: root mounts the fresh file
# systems (loop devices) and drops the page cache.
#
# Install the yardsticks: apt-get install restic; cargo install rustic-rs.
set -euo pipefail
cd "$(dirname "$0")/.."

BENCH_DIR=${BENCH_DIR:-/tmp/strata-bench}
REPS=${BENCH_REPS:-3}
SETS=("$@")
[ ${#SETS[@]} -eq 0 ] && SETS=(small vm random)
RESULTS="$BENCH_DIR/results.tsv"

log() { printf '%s\n' "$*" >&2; }

need() { command -v "$1" >/dev/null || { log "bench: $1 is required (apt-get install $2)"; exit 1; }; }
need zstd zstd
need mkfs.ext4 e2fsprogs
[ -x /usr/bin/time ] || { log "bench: /usr/bin/time is required (apt-get install time)"; exit 1; }

log "building strata (release)"
cargo build --release --locked --quiet
STRATA=$(pwd)/target/release/strata

TOOLS=(strata)
command -v restic >/dev/null && TOOLS+=(restic) || log "restic not installed: skipped (apt-get install restic)"
command -v rustic >/dev/null && TOOLS+=(rustic) || log "rustic not installed: skipped (cargo install rustic-rs)"

mkdir -p "$BENCH_DIR"
echo "bench-password" >"$BENCH_DIR/password"
PW="$BENCH_DIR/password"

# ---------------------------------------------------------------- data sets
make_small() {
  local d="$BENCH_DIR/data/small"
  [ -d "$d" ] && return
  log "building data set 'small' (copy of /usr/share ${BENCH_SMALL_EXTRA:-})"
  mkdir -p "$d"
  for src in /usr/share ${BENCH_SMALL_EXTRA:-}; do
    cp -a "$src" "$d/$(basename "$src")" 2>/dev/null || true
  done
}

make_vm() {
  local d="$BENCH_DIR/data/vm"
  [ -d "$d" ] && return
  log "building data set 'vm' (4 GiB sparse ext4 image)"
  mkdir -p "$d" "$BENCH_DIR/vm-src"
  cp -a /usr/share/doc "$BENCH_DIR/vm-src/doc"
  cp -a /usr/lib/x86_64-linux-gnu "$BENCH_DIR/vm-src/lib" 2>/dev/null || true
  truncate -s 4G "$d/disk.img"
  mkfs.ext4 -q -F -d "$BENCH_DIR/vm-src" "$d/disk.img"
  rm -rf "$BENCH_DIR/vm-src"
}

make_random() {
  local d="$BENCH_DIR/data/random"
  [ -d "$d" ] && return
  log "building data set 'random' (1 GiB incompressible)"
  mkdir -p "$d"
  for i in $(seq -w 1 16); do head -c 64M /dev/urandom >"$d/random-$i.bin"; done
}

# Changes 1% of the regular files (at least one): rewrites 4 KiB in each.
change_one_percent() {
  local d=$1
  mapfile -t files < <(find "$d" -type f | LC_ALL=C sort)
  local n=${#files[@]} step=100
  [ "$n" -lt 100 ] && step=$n
  for ((i = 0; i < n; i += step)); do
    local f=${files[$i]}
    if [ "$(stat -c %s "$f")" -ge 8192 ]; then
      head -c 4096 /dev/urandom | dd of="$f" bs=4096 seek=1 conv=notrunc status=none
    else
      head -c 16 /dev/urandom >>"$f"
    fi
  done
}

# A fresh ext4 file system for each tool's work area (its data copy,
# repository and restore target). ext4 slows inode allocation for minutes
# after many files were deleted (ialloc.c: recently_deleted scans inode
# tables), which taxed whichever tool ran after another's clean-up: a
# 3 s restore of 'small' took 30 s. As root this mounts a loop device;
# otherwise (or with BENCH_NO_LOOP=1) it uses a plain directory and warns.
fresh_fs() { # dir
  local dir=$1 img="$1.img"
  release_fs "$dir"
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ] && [ -z "${BENCH_NO_LOOP:-}" ]; then
    truncate -s "${BENCH_FS_SIZE:-24G}" "$img"
    mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$img"
    # Direct I/O from the loop device to its image: otherwise every byte a
    # tool writes is copied a second time, by kernel threads competing for
    # the same cores (0.9 s of CPU per GiB written, measured here).
    local dev
    if dev=$(losetup --direct-io=on -f --show "$img" 2>/dev/null) && mount "$dev" "$dir"; then
      return
    fi
    [ -n "${dev:-}" ] && losetup -d "$dev" 2>/dev/null
    if mount -o loop "$img" "$dir"; then
      return
    fi
    rm -f "$img"
    log "bench: cannot mount a loop device; using a plain directory"
  else
    log "bench: not root (or BENCH_NO_LOOP): a plain directory; a tool run after mass deletes may be slowed by ext4"
  fi
}

release_fs() { # dir
  local dir=$1
  if mountpoint -q "$dir" 2>/dev/null; then
    local dev
    dev=$(findmnt -n -o SOURCE "$dir")
    umount "$dir"
    losetup -d "$dev" 2>/dev/null || true
  fi
  rm -rf "$dir" "$dir.img"
}

# ---------------------------------------------------------------- tools
tool_env() { # tool repo
  case $1 in
    strata) echo "STRATA_REPO=$2 STRATA_PASSWORD_FILE=$PW" ;;
    restic) echo "RESTIC_REPOSITORY=$2 RESTIC_PASSWORD_FILE=$PW" ;;
    rustic) echo "RUSTIC_REPOSITORY=$2 RUSTIC_PASSWORD_FILE=$PW" ;;
  esac
}

tool_cmd() { # tool action data target
  local t=$1 a=$2 data=${3:-} target=${4:-}
  case "$t:$a" in
    strata:init) echo "$STRATA init -q" ;;
    strata:backup) echo "$STRATA backup -q $data" ;;
    strata:restore) echo "$STRATA restore -q latest --target $target" ;;
    restic:init) echo "restic init -q --repository-version 2" ;;
    restic:backup) echo "restic backup -q --compression auto $data" ;;
    restic:restore) echo "restic restore -q latest --target $target" ;;
    rustic:init) echo "rustic init" ;;
    rustic:backup) echo "rustic backup --no-progress $data" ;;
    rustic:restore) echo "rustic restore --no-progress latest $target" ;;
  esac
}

# Before each timed step: everything written so far on disk, the page cache
# emptied, then the step's inputs read back in, so every tool starts from the
# same warm inputs and the same free memory whatever ran before it. (On this
# VM, memory freed to the host makes first-touched pages expensive; without
# this a tool's time depended on what the one before it left behind.)
settle() { # paths to warm...
  sync
  if [ "$(id -u)" = 0 ]; then echo 3 >/proc/sys/vm/drop_caches; fi
  local p
  # Through a pipe: GNU tar reads no file contents when writing to /dev/null.
  for p in "$@"; do tar -cf - -C "$p" . 2>/dev/null | cat >/dev/null || true; done
}

# Runs a command under /usr/bin/time; appends "set tool step seconds maxrss_kib".
measure() { # set tool step warm-path cmd...
  local set=$1 tool=$2 step=$3 warm=$4
  shift 4
  local tf="$BENCH_DIR/time.out"
  settle "$warm"
  if ! env $(tool_env "$tool" "$REPO") /usr/bin/time -f '%e %M' -o "$tf" "$@" >"$BENCH_DIR/$tool-$step.log" 2>&1; then
    log "bench: $tool $step failed; see $BENCH_DIR/$tool-$step.log"
    tail -5 "$BENCH_DIR/$tool-$step.log" >&2
    exit 1
  fi
  read -r secs rss <"$tf"
  printf '%s\t%s\t%s\t%s\t%s\n' "$set" "$tool" "$step" "$secs" "$rss" >>"$RESULTS"
  log "  $tool $step: ${secs}s, peak ${rss} KiB"
}

bench_set() {
  local set=$1 master="$BENCH_DIR/data/$1"
  "make_$set"
  local bytes
  bytes=$(du -sb --apparent-size "$master" | cut -f1)
  log "== $set: $(numfmt --to=iec "$bytes") apparent, $REPS runs each"
  local rep tool
  for rep in $(seq 1 "$REPS"); do
    # The floor: just reading and compressing the data.
    settle "$master"
    /usr/bin/time -f '%e' -o "$BENCH_DIR/time.out" \
      bash -c "tar -cf - -C '$master' . | zstd -3 -T0 -q >/dev/null"
    printf '%s\t%s\t%s\t%s\t%s\n' "$set" "tar+zstd" "backup" "$(cat "$BENCH_DIR/time.out")" 0 >>"$RESULTS"
    for tool in "${TOOLS[@]}"; do
      log " run $rep: $tool"
      local work="$BENCH_DIR/run/$tool"
      mkdir -p "$BENCH_DIR/run"
      fresh_fs "$work"
      # Each tool backs up its own copy, so the 1% change is the same for all.
      cp -a --sparse=always "$master" "$work/data"
      REPO="$work/repo"
      env $(tool_env "$tool" "$REPO") $(tool_cmd "$tool" init) >"$BENCH_DIR/$tool-init.log" 2>&1 ||
        { log "bench: $tool init failed; see $BENCH_DIR/$tool-init.log"; exit 1; }
      measure "$set" "$tool" backup "$work/data" $(tool_cmd "$tool" backup "$work/data")
      measure "$set" "$tool" rerun "$work/data" $(tool_cmd "$tool" backup "$work/data")
      change_one_percent "$work/data"
      measure "$set" "$tool" changed "$work/data" $(tool_cmd "$tool" backup "$work/data")
      measure "$set" "$tool" restore "$REPO" $(tool_cmd "$tool" restore "$work/data" "$work/restored")
      printf '%s\t%s\t%s\t%s\t%s\n' "$set" "$tool" "repo_mib" \
        "$(( $(du -sb "$REPO" | cut -f1) / 1048576 ))" 0 >>"$RESULTS"
      release_fs "$work"
    done
  done
}

# Unmount whatever a failed run left mounted.
cleanup() {
  for t in strata restic rustic; do release_fs "$BENCH_DIR/run/$t"; done
}
trap cleanup EXIT

: >"$RESULTS"
for s in "${SETS[@]}"; do
  case $s in small|vm|random) bench_set "$s" ;; *) log "unknown set $s"; exit 2 ;; esac
done

python3 - "$RESULTS" <<'PY'
import sys, collections, statistics
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
runs = collections.defaultdict(lambda: collections.defaultdict(list))
for s, tool, step, v, rss in rows:
    runs[(s, step)][tool].append((float(v), int(rss)))
# The median run of each step (by time), and the median peak memory.
val = {k: {t: (statistics.median(x[0] for x in r), int(statistics.median(x[1] for x in r)),
               min(x[0] for x in r), max(x[0] for x in r))
           for t, r in d.items()} for k, d in runs.items()}
tools = [t for t in ("strata", "restic", "rustic") if any(t in d for d in val.values())]
print()
print(f"{'set':8} {'step':9} " + " ".join(f"{t:>16}" for t in tools) + "   strata/restic")
for (s, step), d in val.items():
    if step == "backup" and "tar+zstd" in d:
        floor = d["tar+zstd"][0]
    cells = []
    for t in tools:
        if t in d:
            v, rss = d[t][0], d[t][1]
            cells.append(f"{v:>8.2f}{'s' if step != 'repo_mib' else 'M':1} {rss // 1024:>5}M" if step != "repo_mib" else f"{int(v):>15}M")
        else:
            cells.append(f"{'-':>16}")
    ratio = ""
    if "strata" in d and "restic" in d and d["restic"][0] > 0:
        ratio = f"{d['strata'][0] / d['restic'][0]:.2f}"
        if step != "repo_mib":
            ratio += f"  (memory {d['strata'][1] / max(d['restic'][1], 1):.2f})"
    print(f"{s:8} {step:9} " + " ".join(cells) + f"   {ratio}")
    if step == "backup" and "strata" in d and "tar+zstd" in d:
        print(f"{'':8} {'':9} tar|zstd -3 -T0: {floor:.2f}s; strata throughput is {floor / d['strata'][0] * 100:.0f}% of it")
print("\ncolumns: median seconds (or MiB) and median peak RSS over the runs; ratio < 1 means strata is faster/smaller")
print("spread (min-max seconds): " + "; ".join(
    f"{s}/{step}/{t} {v[2]:.2f}-{v[3]:.2f}" for (s, step), d in val.items() if step != "repo_mib"
    for t, v in d.items() if t != "tar+zstd" and v[3] > v[2] * 1.15))
PY
