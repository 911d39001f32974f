#!/usr/bin/env bash
# A throwaway local S3 endpoint (moto) for developing against s3:// URLs without a cloud account.
#
#   infra/moto-s3.sh [BUCKET [FOLDER]]
#
# Starts `python -m moto.server` on 127.0.0.1:${PORT:-5055} in the background (in memory: everything
# is gone when it stops), creates BUCKET (default: photos) and, given FOLDER, uploads every file in
# it to s3://BUCKET/incoming/ (keys relative to FOLDER). stdout is only `export ...` lines, so
#
#   eval "$(infra/moto-s3.sh photos samples)"
#   tng compress s3://photos/incoming s3://photos/archive
#   kill "$MOTO_S3_PID"
#
# works in one shell; everything else (progress, how to stop it) goes to stderr.
# Environment: PORT (default 5055), PYTHON (default python3; needs `pip install 'moto[server]'`).
set -euo pipefail

PY=${PYTHON:-python3}
PORT=${PORT:-5055}
BUCKET=${1:-photos}
FOLDER=${2:-}
HOST=127.0.0.1
URL="http://$HOST:$PORT"
LOG="${TMPDIR:-/tmp}/moto-s3-$PORT.log"

say() { printf '%s\n' "$*" >&2; }
die() { say "moto-s3: $*"; exit 1; }

if ! "$PY" -c "import moto, moto.server, boto3" >/dev/null 2>&1; then
    die "moto's server is not installed for $PY. Install the optional dev dependency:
    $PY -m pip install 'moto[server]'
(or point PYTHON at an interpreter that has it, e.g. PYTHON=.venv/bin/python $0 ...)"
fi
command -v curl >/dev/null 2>&1 || die "curl is needed to wait for the server; install it"
if [[ -n "$FOLDER" && ! -d "$FOLDER" ]]; then
    die "not a folder: $FOLDER"
fi
if curl -s -o /dev/null --max-time 1 "$URL/"; then
    die "something already answers on $URL; stop it or choose another port: PORT=5056 $0 $*"
fi

# Output to a log file, stdin from /dev/null: the server must not hold the caller's pipes open
# (`eval "$(...)"` waits for stdout to close).
nohup "$PY" -m moto.server -H "$HOST" -p "$PORT" </dev/null >"$LOG" 2>&1 &
PID=$!

ready=0
trap '[[ $ready == 1 ]] || kill "$PID" 2>/dev/null || true' EXIT

for _ in $(seq 1 30); do                     # 30 × 0.5 s = 15 s at most
    if ! kill -0 "$PID" 2>/dev/null; then
        say "moto-s3: the server exited; its log ($LOG):"
        tail -n 20 "$LOG" >&2 || true
        exit 1
    fi
    if curl -s -o /dev/null --max-time 1 "$URL/"; then
        ready=1
        break
    fi
    sleep 0.5
done
if [[ $ready != 1 ]]; then
    say "moto-s3: no answer from $URL after 15 s; its log ($LOG):"
    tail -n 20 "$LOG" >&2 || true
    exit 1
fi
ready=0                                      # until the bucket exists, a failure stops the server

AWS_ENDPOINT_URL="$URL" AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1 \
"$PY" - "$URL" "$BUCKET" "$FOLDER" <<'EOF'
import os
import sys

import boto3

url, bucket, folder = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
try:
    s3.create_bucket(Bucket=bucket)
except s3.exceptions.BucketAlreadyOwnedByYou:
    pass
print(f"created bucket s3://{bucket}", file=sys.stderr)

if folder:
    n = 0
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            key = "incoming/" + os.path.relpath(path, folder).replace(os.sep, "/")
            s3.upload_file(path, bucket, key)
            n += 1
    print(f"uploaded {n} file(s) from {folder} to s3://{bucket}/incoming/", file=sys.stderr)
EOF
ready=1

# stdout: only lines to paste or eval.
echo "export AWS_ENDPOINT_URL=$URL AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1"
echo "export MOTO_S3_PID=$PID"

say "moto S3 is running at $URL (pid $PID, log $LOG), listening on $HOST only."
say "Paste the export lines above into your shell (eval \"\$($0 ...)\" does it for you), then e.g.:"
say "  tng compress s3://$BUCKET/incoming s3://$BUCKET/archive"
say "Stop it with: kill $PID"
