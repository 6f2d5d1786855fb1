#!/usr/bin/env bash
# Status of a job started by submit.sh (the cluster-generic executor's status command).
# Usage: status.sh PID. Prints running, success or failed.
set -euo pipefail
pid=$1
logdir=${SLDATA_CLUSTER_LOGDIR:-logs/local-cluster}
status_of_exit() {
    if [ "$(cat "$logdir/exit/$pid")" = 0 ]; then echo success; else echo failed; fi
}
if [ -f "$logdir/exit/$pid" ]; then
    status_of_exit
elif kill -0 "$pid" 2>/dev/null; then
    echo running
elif [ -f "$logdir/exit/$pid" ]; then  # it finished between the two checks
    status_of_exit
else
    echo failed  # gone without an exit status: killed
fi
