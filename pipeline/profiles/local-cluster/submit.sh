#!/usr/bin/env bash
# Submit a Snakemake job script as its own background process (the cluster-generic executor's
# submit command). Usage: submit.sh RULE JOBID JOBSCRIPT. Prints the job's PID (its "cluster job
# id"), which status.sh and cancel.sh take.
set -euo pipefail
rule=$1 jobid=$2 jobscript=$3
logdir=${SLDATA_CLUSTER_LOGDIR:-logs/local-cluster}
mkdir -p "$logdir/exit"
logdir=$(cd "$logdir" && pwd)
# setsid: a session of its own, so the job outlives this script and cancel.sh can stop its whole
# process group. The runner records its own PID, runs the job script and records the exit status.
setsid bash -c '
    pid=$$ rule=$1 jobid=$2 jobscript=$3 logdir=$4
    exec >"$logdir/$rule-$jobid-$pid.log" 2>&1 </dev/null
    printf "start\t%s\t%s\t%s\t%s\n" "$pid" "$rule" "$jobid" "$(date +%s.%N)" >>"$logdir/jobs.tsv"
    rc=0
    bash "$jobscript" || rc=$?
    printf "end\t%s\t%s\t%s\t%s\t%s\n" "$pid" "$rule" "$jobid" "$(date +%s.%N)" "$rc" >>"$logdir/jobs.tsv"
    echo "$rc" >"$logdir/exit/$pid"
' local-cluster-job "$rule" "$jobid" "$jobscript" "$logdir" &
echo "$!"
