#!/usr/bin/env bash
# Stop jobs started by submit.sh (the cluster-generic executor's cancel command, on Ctrl-C).
# Usage: cancel.sh PID...; each job is a process group of its own (setsid), stopped as a whole.
for pid in "$@"; do
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
done
