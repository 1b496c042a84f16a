#!/usr/bin/env bash
# Cloud benchmark: strata against restic and rustic (when installed) on S3
# (SeaweedFS on 127.0.0.1) through bench/s3proxy.py, which adds a latency to
# every request and counts requests by class.
#
#   bench/cloud.sh [LATENCY_MS...]     # default: 0 20 (e.g. `bench/cloud.sh 0 20 50`)
#
# Steps, per latency and tool, on a fresh repository prefix:
#   backup        initial backup (empty cache)
#   rerun         no-change re-run, warm cache
#   rerun_cold    no-change re-run, empty cache (a restarted pod)
#   restore       restore of the latest snapshot (warm cache)
# Prints the median seconds per step (BENCH_REPS runs, default 1), the ratio
# strata / best of the others, the requests per step by class (PUT, PART,
# MPU = multipart create/complete/abort, GET, HEAD, LIST, DELETE) and the
# write requests per GiB stored.
#
# Environment:
#   CLOUD_DATA      what to back up (default: a copy of /usr/share/doc under
#                   $BENCH_DIR, about 120 MB in 5,000 files)
#   BENCH_DIR       work directory (default /tmp/strata-cloud-bench)
#   BENCH_REPS      runs per latency (default 1)
#   CLOUD_TOOLS     the tools to run (default: strata and whichever of
#                   restic and rustic are installed), e.g. "strata"
#   STRATA          the strata binary (default: built here, release)
#   CLOUD_S3        S3 upstream host:port (default 127.0.0.1:8333, as
#                   `eval "$(scripts/servers start)"` starts it)
#   CLOUD_BUCKET    bucket (default $STRATA_TEST_S3_BUCKET or strata)
#   CLOUD_PROXY     proxy listen address (default 127.0.0.1:8334)
#   CLOUD_RESTORE_DIR  where restores go (default: a new directory in
#                   /dev/shm, so that ext4's slow inode allocation after
#                   the previous restore's deletion - see compare.sh - does
#                   not add a random second to some tool's restore; else
#                   $BENCH_DIR/restored)
#   CLOUD_FILER     SeaweedFS filer (default 127.0.0.1:8888): the
#                   repositories are deleted through it afterwards; empty
#                   to keep them
# Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, else the test
# servers' STRATA_TEST_S3_KEY / STRATA_TEST_S3_SECRET.
#
# Install the yardsticks: apt-get install restic; cargo install rustic-rs.
set -euo pipefail
cd "$(dirname "$0")/.."

BENCH_DIR=${BENCH_DIR:-/tmp/strata-cloud-bench}
REPS=${BENCH_REPS:-1}
LATENCIES=("$@")
[ ${#LATENCIES[@]} -eq 0 ] && LATENCIES=(0 20)
UPSTREAM=${CLOUD_S3:-127.0.0.1:8333}
BUCKET=${CLOUD_BUCKET:-${STRATA_TEST_S3_BUCKET:-strata}}
PROXY=${CLOUD_PROXY:-127.0.0.1:8334}
FILER=${CLOUD_FILER-127.0.0.1:8888}
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-${STRATA_TEST_S3_KEY:-strata-test}}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-${STRATA_TEST_S3_SECRET:-strata-test-secret}}
export AWS_REGION=${AWS_REGION:-us-east-1}
RESULTS="$BENCH_DIR/results.tsv"
RESTORED=${CLOUD_RESTORE_DIR:-}
if [ -z "$RESTORED" ]; then
  if [ -d /dev/shm ] && [ -w /dev/shm ]; then
    RESTORED=$(mktemp -d /dev/shm/strata-cloud-restore.XXXXXX)/restored
  else
    RESTORED="$BENCH_DIR/restored"
  fi
fi
RUN_ID=$(date +%Y%m%d-%H%M%S)-$$
PREFIX="bench-cloud/$RUN_ID"

log() { printf '%s\n' "$*" >&2; }

[ -x /usr/bin/time ] || { log "bench: /usr/bin/time is required (apt-get install time)"; exit 1; }
command -v curl >/dev/null || { log "bench: curl is required"; exit 1; }
(exec 3<>"/dev/tcp/${UPSTREAM%:*}/${UPSTREAM#*:}") 2>/dev/null ||
  { log "bench: no S3 server on $UPSTREAM: run  eval \"\$(scripts/servers start)\"  first"; exit 1; }

if [ -z "${STRATA:-}" ]; then
  log "building strata (release)"
  cargo build --release --locked --quiet
  STRATA="${CARGO_TARGET_DIR:-$(pwd)/target}/release/strata"
fi

TOOLS=(strata)
command -v restic >/dev/null && TOOLS+=(restic) || log "restic not installed: skipped (apt-get install restic)"
command -v rustic >/dev/null && TOOLS+=(rustic) || log "rustic not installed: skipped (cargo install rustic-rs)"
if [ -n "${CLOUD_TOOLS:-}" ]; then read -r -a TOOLS <<<"$CLOUD_TOOLS"; fi

mkdir -p "$BENCH_DIR"
echo "bench-password" >"$BENCH_DIR/password"
PW="$BENCH_DIR/password"

DATA=${CLOUD_DATA:-$BENCH_DIR/data/doc}
if [ -z "${CLOUD_DATA:-}" ] && [ ! -d "$DATA" ]; then
  log "building the data set (copy of /usr/share/doc)"
  mkdir -p "$BENCH_DIR/data"
  cp -a /usr/share/doc "$DATA"
fi

# ---------------------------------------------------------------- the proxy
PROXY_URL="http://$PROXY"
python3 bench/s3proxy.py --listen "$PROXY" --upstream "$UPSTREAM" \
  --counts-file "$BENCH_DIR/proxy-counts.json" 2>"$BENCH_DIR/proxy.log" &
PROXY_PID=$!
cleanup() {
  kill "$PROXY_PID" 2>/dev/null || true
  if [ -n "$FILER" ]; then
    curl -s -o /dev/null -X DELETE "http://$FILER/buckets/$BUCKET/$PREFIX?recursive=true&ignoreRecursiveError=true" || true
  fi
  rm -rf "$BENCH_DIR/cache" "$RESTORED"
  case $RESTORED in /dev/shm/strata-cloud-restore.*) rmdir "$(dirname "$RESTORED")" 2>/dev/null || true ;; esac
}
trap cleanup EXIT
for _ in $(seq 1 50); do curl -sf "$PROXY_URL/__proxy/counts" >/dev/null && break; sleep 0.1; done
curl -sf "$PROXY_URL/__proxy/counts" >/dev/null || { log "bench: the proxy did not start; see $BENCH_DIR/proxy.log"; exit 1; }
proxy() { curl -sf -X POST "$PROXY_URL/__proxy/$1"; }

# ---------------------------------------------------------------- tools
# Sets up tool $1's repository $2 (a key under the bucket); cache dir in $CACHE.
tool_env() { # tool key
  case $1 in
    strata)
      cat >"$BENCH_DIR/strata.toml" <<EOF
[repository]
url = "s3://$BUCKET/$2"
password_file = "$PW"
options = { aws_endpoint = "$PROXY_URL", aws_allow_http = "true", aws_region = "$AWS_REGION" }
EOF
      echo "STRATA_CONFIG=$BENCH_DIR/strata.toml XDG_CACHE_HOME=$CACHE" ;;
    restic)
      echo "RESTIC_REPOSITORY=s3:$PROXY_URL/$BUCKET/$2 RESTIC_PASSWORD_FILE=$PW RESTIC_CACHE_DIR=$CACHE" ;;
    rustic)
      mkdir -p "$BENCH_DIR/rustic-config/rustic"
      cat >"$BENCH_DIR/rustic-config/rustic/cloud.toml" <<EOF
[repository]
repository = "opendal:s3"
password-file = "$PW"
[repository.options]
endpoint = "$PROXY_URL"
bucket = "$BUCKET"
root = "/$2"
region = "$AWS_REGION"
access_key_id = "$AWS_ACCESS_KEY_ID"
secret_access_key = "$AWS_SECRET_ACCESS_KEY"
EOF
      echo "XDG_CONFIG_HOME=$BENCH_DIR/rustic-config" ;;
  esac
}

tool_cmd() { # tool action
  case "$1:$2" in
    strata:init) echo "$STRATA init -q" ;;
    strata:backup) echo "$STRATA backup -q $DATA" ;;
    strata:restore) echo "$STRATA restore -q latest --target $RESTORED" ;;
    restic:init) echo "restic init -q --repository-version 2" ;;
    restic:backup) echo "restic backup -q --compression auto $DATA" ;;
    restic:restore) echo "restic restore -q latest --target $RESTORED" ;;
    rustic:init) echo "rustic -P cloud --cache-dir $CACHE init" ;;
    rustic:backup) echo "rustic -P cloud --cache-dir $CACHE backup --no-progress $DATA" ;;
    rustic:restore) echo "rustic -P cloud --cache-dir $CACHE restore --no-progress latest $RESTORED" ;;
  esac
}

# Runs one step through the proxy: appends
# "latency tool step seconds maxrss_kib counts-json" to the results.
measure() { # latency tool step key action
  local lat=$1 tool=$2 step=$3 key=$4 action=$5 tf="$BENCH_DIR/time.out"
  [ "$action" = backup ] && tar -cf - -C "$DATA" . 2>/dev/null | cat >/dev/null
  rm -rf "$RESTORED"
  proxy reset >/dev/null
  # shellcheck disable=SC2046
  if ! env $(tool_env "$tool" "$key") /usr/bin/time -f '%e %M' -o "$tf" $(tool_cmd "$tool" "$action") \
    >"$BENCH_DIR/$tool-$step.log" 2>&1; then
    log "bench: $tool $step failed; see $BENCH_DIR/$tool-$step.log"
    tail -5 "$BENCH_DIR/$tool-$step.log" >&2
    exit 1
  fi
  local counts secs rss
  counts=$(curl -sf "$PROXY_URL/__proxy/counts")
  read -r secs rss <"$tf"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$lat" "$tool" "$step" "$secs" "$rss" "$counts" >>"$RESULTS"
  log "  $tool $step: ${secs}s, $(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(" ".join(f"{k} {d[k]}" for k in ("PUT","PART","MPU","GET","HEAD","LIST","DELETE","OTHER") if d[k]))' "$counts")"
}

: >"$RESULTS"
log "data: $DATA, $(du -sh --apparent-size "$DATA" | cut -f1), $(find "$DATA" -type f | wc -l) files; repositories under s3://$BUCKET/$PREFIX"
for rep in $(seq 1 "$REPS"); do
  for lat in "${LATENCIES[@]}"; do
    proxy "latency?ms=$lat" >/dev/null
    for tool in "${TOOLS[@]}"; do
      log "== run $rep, ${lat} ms: $tool"
      key="$PREFIX/$tool-${lat}ms-$rep"
      CACHE="$BENCH_DIR/cache/$tool-warm"
      rm -rf "$BENCH_DIR/cache"
      mkdir -p "$CACHE"
      # shellcheck disable=SC2046
      env $(tool_env "$tool" "$key") $(tool_cmd "$tool" init) >"$BENCH_DIR/$tool-init.log" 2>&1 ||
        { log "bench: $tool init failed; see $BENCH_DIR/$tool-init.log"; tail -5 "$BENCH_DIR/$tool-init.log" >&2; exit 1; }
      measure "$lat" "$tool" backup "$key" backup
      measure "$lat" "$tool" rerun "$key" backup
      CACHE="$BENCH_DIR/cache/$tool-cold"
      mkdir -p "$CACHE"
      measure "$lat" "$tool" rerun_cold "$key" backup
      CACHE="$BENCH_DIR/cache/$tool-warm"
      measure "$lat" "$tool" restore "$key" restore
    done
  done
done

python3 - "$RESULTS" <<'PY'
import sys, json, collections, statistics
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
runs = collections.defaultdict(list)
for lat, tool, step, secs, rss, counts in rows:
    runs[(int(float(lat)), step, tool)].append((float(secs), int(rss), json.loads(counts)))
tools = [t for t in ("strata", "restic", "rustic") if any(k[2] == t for k in runs)]
lats = sorted({k[0] for k in runs})
steps = ("backup", "rerun", "rerun_cold", "restore")
med = {k: (statistics.median(r[0] for r in v), int(statistics.median(r[1] for r in v)), v[-1][2])
       for k, v in runs.items()}
classes = ("PUT", "PART", "MPU", "GET", "HEAD", "LIST", "DELETE", "OTHER")

print()
print(f"{'latency':8} {'step':11} " + " ".join(f"{t:>16}" for t in tools) + "   strata/best other")
for lat in lats:
    for step in steps:
        cells, others = [], []
        for t in tools:
            m = med.get((lat, step, t))
            if m is None:
                cells.append(f"{'-':>16}")
                continue
            cells.append(f"{m[0]:>8.2f}s {m[1] // 1024:>5}M")
            if t != "strata":
                others.append(m[0])
        ratio = ""
        s = med.get((lat, step, "strata"))
        if s and others and min(others) > 0:
            ratio = f"{s[0] / min(others):.2f}"
        print(f"{str(lat) + ' ms':8} {step:11} " + " ".join(cells) + f"   {ratio}")
print("\ncolumns: median seconds and median peak RSS; ratio < 1 means strata is faster")

print(f"\n{'latency':8} {'tool':7} {'step':11} " + " ".join(f"{c:>6}" for c in classes) + f" {'total':>6} {'MiB up':>7} {'MiB dn':>7} {'wr/GiB':>7}")
for lat in lats:
    for t in tools:
        for step in steps:
            m = med.get((lat, step, t))
            if m is None:
                continue
            c = m[2]
            writes = c["PUT"] + c["PART"] + c["MPU"]
            per_gib = f"{writes / (c['bytes_up'] / 2**30):.0f}" if step == "backup" and c["bytes_up"] else ""
            print(f"{str(lat) + ' ms':8} {t:7} {step:11} " + " ".join(f"{c[k]:>6}" for k in classes)
                  + f" {c['total']:>6} {c['bytes_up'] / 2**20:>7.1f} {c['bytes_down'] / 2**20:>7.1f} {per_gib:>7}")
print("\nrequests of the last run; MPU = multipart create/complete/abort; wr/GiB = (PUT+PART+MPU) per GiB uploaded")
PY
