#!/usr/bin/env bash
# Train practice_jax on a Cloud TPU VM (one host or a multi-host pod slice).
#
#   launch/tpu_vm.sh --config=configs/mnist.py --mount-bucket=my-bucket \
#       --workdir=/gcs/my-bucket/runs/mnist --tfds-data-dir=gs://my-bucket/tensorflow_datasets --delete
#
# Creates the VM (directly, or --queued through a queued resource that waits for
# capacity), with --mount-bucket mounts a Cloud Storage bucket at /gcs/BUCKET on every
# worker (Cloud Storage FUSE: practice_jax writes its workdir through the file system, and
# every process of a multi-host run writes its checkpoint shards into the same folder),
# copies this repository's HEAD (a `git archive` tarball) or clones --repo on every worker,
# installs it with jax[tpu] in a virtual environment on every worker, then starts
# `python -m practice_jax.main` on every worker at once (--worker=all), detached from the
# ssh connection and recorded in a pid file, and follows its output. On a pod slice,
# practice_jax.main calls jax.distributed.initialize() itself.
#
# Interruptions: Ctrl-C (or SIGTERM) stops the trainers on every worker (each saves a
# checkpoint), then, with --delete, deletes the VM, also one still being created. A
# dropped connection that gcloud re-runs finds the running trainer and follows it again.
# Run with --help for every option; --dry-run prints the commands instead of running them.
#
# Works with bash 3.2 (macOS) and later; needs gcloud (not for --dry-run) and git. The
# workers need bash, flock, setsid and GNU tail (every TPU VM image has them).

set -euo pipefail

readonly PROG="launch/tpu_vm.sh"
readonly REMOTE_DIR="practice_jax"                      # on each worker, in the home folder
readonly REMOTE_TARBALL="practice_jax.tar.gz"
# shellcheck disable=SC2016  # $HOME is expanded by the worker's shell, not here
readonly REMOTE_VENVS='"$HOME"/.venvs'
readonly REMOTE_VENV="$REMOTE_VENVS/practice_jax"
readonly STOP_TIMEOUT_S=300       # a stopping trainer's time to save before it is killed
readonly POLL_S=${PRACTICE_JAX_LAUNCH_POLL_S:-30}   # queued resources: seconds between looks

# The trainer's keeper, run by bash on every worker: WORKER_PROGRAM MODE RUN_ID [ARGS...]
#   start RUN_ID COMMAND...  starts COMMAND detached (in its own session, under a keeper
#                            that records its exit status; output to
#                            ~/.practice_jax_launch/RUN_ID.log, pid in trainer.pid), or,
#                            when gcloud re-runs this after a dropped connection, finds the
#                            trainer RUN_ID already started; then follows its output until
#                            it ends and exits with its exit status. Refuses (status 3) while
#                            another launch's trainer runs.
#   attach any               follows the running trainer's output until it ends.
#   stop RUN_ID|any LIMIT_S  SIGTERM to the trainer (it saves a checkpoint and exits); after
#                            LIMIT_S seconds a second SIGTERM, which ends it at once. A
#                            start of RUN_ID still on its way (the connection was cut as
#                            it began) then does not start it. Start and stop take turns
#                            (flock), so a trainer being started is stopped too.
read -r -d '' WORKER_PROGRAM <<'EOF' || true
set -u
dir=$HOME/.practice_jax_launch
mkdir -p "$dir"
me=$(hostname)
mode=$1 id=$2
shift 2
running() {
  pid="" run=""
  [ -s "$dir/trainer.pid" ] && read -r pid run <"$dir/trainer.pid" && kill -0 "$pid" 2>/dev/null
}
result() {
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    if [ -s "$dir/$1.status" ]; then return "$(cat "$dir/$1.status")"; fi
    sleep 0.5
  done
  echo "$me: the trainer of launch $1 ended without an exit status." >&2
  return 1
}
follow() {
  tail -n "$1" -f --pid="$2" "$dir/$3.log" || return
  result "$3"
}
case $mode in
start)
  exec 9>"$dir/lock"
  flock 9
  if [ -e "$dir/$id.stopped" ]; then
    echo "$me: launch $id was stopped before its trainer started." >&2
    exit 1
  fi
  if running; then
    if [ "$run" != "$id" ]; then
      echo "$me: the trainer of launch $run is still running (pid $pid): watch it with --attach or stop it with --stop." >&2
      exit 3
    fi
    exec 9>&-
    echo "$me: launch $id is running already (pid $pid): following it again." >&2
    follow +1 "$pid" "$id"
    exit
  fi
  if [ -s "$dir/$id.status" ]; then
    cat "$dir/$id.log"
    result "$id"
    exit
  fi
  rm -f "$dir/trainer.pid"
  setsid bash -c "$BASH_EXECUTION_STRING" tpu_vm_worker keep "$id" "$@" >"$dir/$id.log" 2>&1 </dev/null 9>&- &
  until [ -s "$dir/trainer.pid" ] && read -r pid run <"$dir/trainer.pid" && [ "$run" = "$id" ]; do sleep 0.1; done
  exec 9>&-
  follow +1 "$pid" "$id"
  ;;
keep)
  "$@" &
  echo "$! $id" >"$dir/trainer.pid.new" && mv "$dir/trainer.pid.new" "$dir/trainer.pid"
  wait $!
  echo $? >"$dir/$id.status"
  ;;
attach)
  if ! running; then echo "$me: no trainer is running." >&2; exit 0; fi
  echo "$me: following the trainer of launch $run (pid $pid)." >&2
  follow 20 "$pid" "$run"
  ;;
stop)
  exec 9>"$dir/lock"
  flock 9
  if [ "$id" != any ]; then touch "$dir/$id.stopped"; fi
  if ! running || { [ "$id" != any ] && [ "$run" != "$id" ]; }; then exit 0; fi
  exec 9>&-
  echo "$me: stopping the trainer of launch $run (pid $pid): it saves a checkpoint, then exits." >&2
  kill -TERM "$pid"
  tail -n 0 -f --pid="$pid" "$dir/$run.log" &
  waited=0
  while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt "$1" ]; do sleep 1; waited=$((waited + 1)); done
  if kill -0 "$pid" 2>/dev/null; then
    echo "$me: the trainer did not stop within $1 s: ending it at once, without saving." >&2
    kill -TERM "$pid"
    sleep 5
    kill -KILL "$pid" 2>/dev/null
  fi
  wait
  result "$run"
  echo "$me: the trainer of launch $run stopped (exit status $?)." >&2
  ;;
esac
EOF
readonly WORKER_PROGRAM

usage() {
  cat <<'EOF'
Usage: launch/tpu_vm.sh --config=CONFIG --workdir=WORKDIR [options] [-- MAIN_ARGS...]
       launch/tpu_vm.sh --name=NAME --zone=ZONE --attach | --stop [--delete]

Creates a Cloud TPU VM, copies the code to every worker, installs it, and runs
  python -m practice_jax.main --config=CONFIG --workdir=WORKDIR MAIN_ARGS...
on every worker (gcloud ... --worker=all), detached from the connection; its output is
streamed and appended to a local log file. Ctrl-C stops the trainers (each saves a
checkpoint first); with --delete the VM is then deleted.

Required:
  --config=PATH          experiment config, relative to the repository root and
                         committed (e.g. configs/mnist.py): the workers get HEAD
  --workdir=PATH         where the run writes, a folder (not gs://: practice_jax writes
                         it through the file system); use a mounted bucket,
                         /gcs/BUCKET/runs/NAME with --mount-bucket=BUCKET: the VM's
                         disk is lost with the VM, and on a multi-host slice every
                         worker must write its checkpoint shards into the same folder

TPU VM:
  --name=NAME            VM name (default: practice-jax)
  --zone=ZONE            (default: us-central2-b; the zone must offer the accelerator)
  --accelerator-type=T   v4-8, v4-32, v5litepod-16, v5p-8, v6e-8 ... (default: v4-8; with
                         --skip-create, read from the VM)
  --version=RUNTIME      TPU software version (default: from the accelerator type:
                         tpu-ubuntu2204-base for v2/v3/v4, v2-alpha-tpuv5-lite for v5e,
                         v2-alpha-tpuv5 for v5p, v2-alpha-tpuv6e for v6e; other types
                         need --version)
  --project=PROJECT      Google Cloud project (default: gcloud's configured project)
  --queued               request the VM as a queued resource, which waits for capacity
                         instead of failing when the zone has none (Google's recommended
                         way); the script waits until it is ACTIVE
  --queue-timeout=D      with --queued: how long to wait, e.g. 30m, 2h, 1d (default: 1h);
                         then the request is deleted (it would otherwise become a billed
                         VM later, with nobody using it)
  --spot                 a Spot VM (cheaper; may be preempted at any time: the trainers
                         get SIGTERM and save a checkpoint)
  --skip-create          reuse an existing VM called NAME
  --delete               delete the VM at the end, also when a step fails, on Ctrl-C, or
                         when Ctrl-C comes while it is still being created

Code and data:
  --repo=URL             git clone URL on the workers instead of copying this
                         checkout's HEAD (uncommitted changes are never copied)
  --ref=REF              with --repo: branch, tag or commit to check out
  --python=VERSION       Python of the workers' virtual environment, installed with uv
                         (default: 3.12; the runtimes' own Python 3.10 is too old)
  --skip-setup           neither copy nor install: run what is on the workers already
                         (--mount-bucket still mounts, if the bucket is not mounted)
  --mount-bucket=BUCKET  on every worker, mount the Cloud Storage bucket BUCKET (a name,
                         no gs://) at /gcs/BUCKET with Cloud Storage FUSE (gcsfuse
                         --implicit-dirs; gcsfuse is installed from Google's apt
                         repository if missing; skipped where already mounted); the
                         VM's service account needs read and write access to it
  --tfds-data-dir=PATH   TFDS_DATA_DIR of the run, e.g. gs://BUCKET/tensorflow_datasets
                         (default: each worker's ~/tensorflow_datasets)

The trainers of an earlier launch (say, after the connection was lost for good):
  --attach               follow their output again, until they end
  --stop                 stop them (each saves a checkpoint); with --delete, then
                         delete the VM

Other:
  --log=FILE             local log of the run's output
                         (default: runs/launch/NAME-DATE-TIME.log in the repository)
  --dry-run              print every command (shell-quoted, prefixed with "+ ")
                         instead of running it; needs no gcloud
  -h, --help             this help
  -- MAIN_ARGS...        passed to practice_jax.main as they are, e.g.
                         -- --config.num_epochs=5 --config_change=continue

Before the first launch: gcloud ssh --worker=all reaches the workers in parallel, with
the key gcloud made at its first ssh; add it to your ssh agent:
  eval "$(ssh-agent -s)" && ssh-add ~/.ssh/google_compute_engine

Examples:
  launch/tpu_vm.sh --accelerator-type=v4-32 --queued --config=configs/cifar10_resnet18.py \
      --mount-bucket=my-bucket --workdir=/gcs/my-bucket/runs/resnet \
      --tfds-data-dir=gs://my-bucket/tfds --delete
  launch/tpu_vm.sh --skip-create --name=my-tpu --config=configs/mnist.py \
      --mount-bucket=my-bucket --workdir=/gcs/my-bucket/runs/mnist -- --config.num_epochs=1
EOF
}

die() {  # one sentence on stderr, exit status 2
  echo "$PROG: error: $*" >&2
  exit 2
}

warn() {
  echo "$PROG: warning: $*" >&2
}

# Joins the arguments into one line that a POSIX shell splits back into the same words.
# (No ${var//pattern/replacement}: its quoting rules differ between bash 3.2 and 5.2.)
SAFE_WORD='^[A-Za-z0-9_@%+=:,./-]+$'
shell_quote() {
  local out="" arg rest quoted sq="'"
  for arg in "$@"; do
    if [[ ! $arg =~ $SAFE_WORD ]]; then
      rest=$arg
      quoted=""
      while [[ $rest == *"$sq"* ]]; do
        quoted+="${rest%%"$sq"*}'\\''"
        rest=${rest#*"$sq"}
      done
      arg="'$quoted$rest'"
    fi
    out="${out:+$out }$arg"
  done
  printf '%s' "$out"
}

# Runs a command in the background and waits for it, so that a signal's trap runs at once
# rather than when the command ends (bash runs traps only between commands); a wait cut
# short by a signal whose trap does not exit ends the command.
child=""
run_child() {
  local status=0
  "$@" &
  child=$!
  wait "$child" || status=$?
  if kill -0 "$child" 2>/dev/null; then
    kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  child=""
  return "$status"
}

# Runs a command, or under --dry-run prints it.
run() {
  if ((dry_run)); then
    echo "+ $(shell_quote "$@")"
  else
    echo "+ $(shell_quote "$@")" >&2
    run_child "$@"
  fi
}

# Runs a command with its output also appended to $log, or under --dry-run prints it.
run_logged() {
  if ((dry_run)); then
    echo "+ $(shell_quote "$@") 2>&1 | tee -a $(shell_quote "$log")"
  else
    echo "+ $(shell_quote "$@")" >&2
    # tee ignores Ctrl-C: it ends with the output it copies, which the clean-up still writes.
    run_child "$@" > >(trap '' INT; tee -a "$log") 2>&1
  fi
}

default_version() {  # the runtime for an accelerator type; empty for a type it does not know
  case $1 in
    v2-* | v3-* | v4-*) echo "tpu-ubuntu2204-base" ;;
    v5litepod-* | v5e-*) echo "v2-alpha-tpuv5-lite" ;;
    v5p-*) echo "v2-alpha-tpuv5" ;;
    v6e-*) echo "v2-alpha-tpuv6e" ;;
  esac
}

# --- arguments --------------------------------------------------------------------
name="practice-jax"
zone="us-central2-b"
accelerator_type=""
version=""
project=""
config=""
workdir=""
tfds_data_dir=""
mount_bucket=""
repo=""
ref=""
python_version="3.12"
log=""
queue_timeout="1h"
spot=0
queued=0
skip_create=0
skip_setup=0
delete=0
dry_run=0
mode="run"
main_args=()

set_option() {  # set_option --name value
  case $1 in
    --name) name=$2 ;;
    --zone) zone=$2 ;;
    --accelerator-type) accelerator_type=$2 ;;
    --version) version=$2 ;;
    --project) project=$2 ;;
    --config) config=$2 ;;
    --workdir) workdir=$2 ;;
    --tfds-data-dir) tfds_data_dir=$2 ;;
    --mount-bucket) mount_bucket=$2 ;;
    --repo) repo=$2 ;;
    --ref) ref=$2 ;;
    --python) python_version=$2 ;;
    --log) log=$2 ;;
    --queue-timeout) queue_timeout=$2 ;;
    *) die "Unknown option $1 (see --help)." ;;
  esac
  [[ -n $2 ]] || die "$1 needs a non-empty value (see --help)."
}

while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --) shift; main_args=("$@"); break ;;
    --dry-run) dry_run=1 ;;
    --spot) spot=1 ;;
    --queued) queued=1 ;;
    --skip-create) skip_create=1 ;;
    --skip-setup) skip_setup=1 ;;
    --delete) delete=1 ;;
    --attach | --stop)
      [[ $mode == run ]] || die "--attach and --stop do not go together."
      mode=${1#--} ;;
    --*=*) set_option "${1%%=*}" "${1#*=}" ;;
    --name | --zone | --accelerator-type | --version | --project | --config | --workdir | \
      --tfds-data-dir | --mount-bucket | --repo | --ref | --python | --log | --queue-timeout)
      if (($# < 2)) || [[ $2 == -* ]]; then die "$1 needs a value (see --help)."; fi
      set_option "$1" "$2"
      shift ;;
    *) die "Unknown argument $1; options are --name=VALUE style, and arguments for practice_jax.main go after -- (see --help)." ;;
  esac
  shift
done

[[ $name =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] ||
  die "--name=$name is not a valid TPU name: lowercase letters, digits and hyphens, starting with a letter."
if [[ $mode == run ]]; then
  [[ -n $config ]] || die "Missing --config: pass the experiment, e.g. --config=configs/mnist.py."
  [[ -n $workdir ]] || die "Missing --workdir: pass where the run writes, e.g. --mount-bucket=BUCKET --workdir=/gcs/BUCKET/runs/mnist."
elif [[ -n $config$workdir$mount_bucket$repo$tfds_data_dir ]] || ((queued || spot || skip_create || skip_setup)) ||
  ((${#main_args[@]})); then
  die "--$mode acts on the trainers of an earlier launch on VM $name: pass only --name, --zone, --project (and --delete with --stop)."
elif [[ $mode == attach ]] && ((delete)); then
  die "--attach does not delete the VM; use --stop --delete to stop the trainers and delete it."
fi
if [[ $workdir == gs://* ]]; then
  gs_bucket=${workdir#gs://}
  gs_bucket=${gs_bucket%%/*}
  die "--workdir=$workdir is not supported: practice_jax writes the workdir through the file system, so mount the bucket on every worker and write there, e.g. --mount-bucket=$gs_bucket --workdir=/gcs/${workdir#gs://}."
fi
if [[ -n $mount_bucket ]]; then
  [[ $mount_bucket != gs://* ]] ||
    die "--mount-bucket=$mount_bucket: pass the bucket's name without gs://, e.g. --mount-bucket=${mount_bucket#gs://}."
  [[ $mount_bucket =~ ^[a-z0-9][-a-z0-9_.]*[a-z0-9]$ ]] ||
    die "--mount-bucket=$mount_bucket is not a bucket name: lowercase letters, digits, hyphens, underscores and dots, starting and ending with a letter or digit."
fi
[[ -z $ref || -n $repo ]] || die "--ref needs --repo (the copied checkout is always HEAD)."
[[ $config != /* ]] || die "--config=$config must be relative to the repository root (the workers have their own copy)."
if ((skip_create)); then
  if ((queued || spot)); then die "--queued and --spot choose how a VM is created; --skip-create uses an existing one."; fi
  [[ -z $version ]] || die "--version chooses the runtime of a new VM; --skip-create uses an existing one."
elif [[ $mode == run ]]; then
  accelerator_type=${accelerator_type:-v4-8}
  [[ $accelerator_type =~ ^v[0-9][a-z0-9]*-[0-9]+$ ]] ||
    die "--accelerator-type=$accelerator_type is not a TPU type: a version and a size, e.g. v4-8, v5litepod-16, v6e-8."
  version=${version:-$(default_version "$accelerator_type")}
  [[ -n $version ]] ||
    die "No runtime version known for --accelerator-type=$accelerator_type (this script knows v2, v3, v4, v5litepod, v5p and v6e): pass --version=RUNTIME, one of gcloud compute tpus versions list --zone=$zone."
fi
queue_timeout_s=0
if [[ $queue_timeout =~ ^([0-9]+)([smhd])$ ]]; then
  case ${BASH_REMATCH[2]} in
    s) queue_timeout_s=${BASH_REMATCH[1]} ;;
    m) queue_timeout_s=$((10#${BASH_REMATCH[1]} * 60)) ;;
    h) queue_timeout_s=$((10#${BASH_REMATCH[1]} * 3600)) ;;
    d) queue_timeout_s=$((10#${BASH_REMATCH[1]} * 86400)) ;;
  esac
fi
((queue_timeout_s > 0)) ||
  die "--queue-timeout=$queue_timeout is not a duration: a whole number and s, m, h or d, e.g. 30m or 2h."

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if ((!dry_run)); then
  command -v gcloud >/dev/null 2>&1 ||
    die "gcloud not found: install the Google Cloud SDK (https://cloud.google.com/sdk/docs/install), or use --dry-run."
fi

gcloud_tpu=(gcloud compute tpus tpu-vm)
gcloud_queued=(gcloud compute tpus queued-resources)
where=("--zone=$zone")
if [[ -n $project ]]; then where+=("--project=$project"); fi

# --- what the workers will get: checked here, before anything is created -----------------
config_file=${config%%:*}
if [[ $mode == run && -z $repo ]] && ((!skip_setup)); then
  [[ -f $repo_root/$config_file ]] ||
    die "Config file $config_file not found in $repo_root; pass a path relative to the repository root, e.g. --config=configs/mnist.py."
  git -C "$repo_root" cat-file -e "HEAD:$config_file" 2>/dev/null ||
    die "$config_file is not committed, and the workers get HEAD (git archive): commit it first (git add $config_file && git commit)."
  git -C "$repo_root" diff --quiet HEAD -- "$config_file" ||
    die "$config_file has uncommitted changes, and the workers get HEAD (git archive), so they would run the committed version: commit it first."
  if [[ -n $(git -C "$repo_root" status --porcelain --untracked-files=no) ]]; then
    warn "uncommitted changes are not copied: the workers get HEAD ($(git -C "$repo_root" rev-parse --short HEAD))."
  fi
fi

# --- the VM's accelerator type: given, or read from the existing VM -----------------------
describe_vm=("${gcloud_tpu[@]}" describe "$name" "${where[@]}")
if [[ $mode == run ]] && ((skip_create)) && [[ -z $accelerator_type ]]; then
  if ((dry_run)); then
    echo "+ $(shell_quote "${describe_vm[@]}" "--format=value(acceleratorType)")"
  else
    accelerator_type=$("${describe_vm[@]}" "--format=value(acceleratorType)") ||
      die "TPU VM $name not found in $zone (--skip-create uses an existing VM; check --name, --zone and --project)."
    [[ -n $accelerator_type ]] ||
      die "TPU VM $name has no accelerator type gcloud can show (made with --type/--topology?): pass --accelerator-type."
  fi
fi

# The number in the accelerator type counts TensorCores (v2 to v4, v5p) or chips (v5e,
# v6e); every type with more than 8 has several hosts (workers).
chips=${accelerator_type##*-}
if [[ $chips =~ ^[0-9]+$ ]] && ((10#$chips > 8)); then multi_host=1; else multi_host=0; fi
if [[ $workdir == /gcs/* ]]; then
  workdir_bucket=${workdir#/gcs/}
  workdir_bucket=${workdir_bucket%%/*}
  if [[ $workdir_bucket != "$mount_bucket" ]]; then
    warn "--workdir=$workdir is under /gcs/$workdir_bucket but there is no --mount-bucket=$workdir_bucket: the bucket must be mounted there on every worker already."
  fi
elif ((multi_host)); then
  warn "--workdir=$workdir is on each worker's own disk, but $accelerator_type has several workers and the checkpoints of a multi-host run need one folder they all share: use --mount-bucket=BUCKET --workdir=/gcs/BUCKET/runs/NAME."
elif [[ -n $workdir ]] && ((delete)); then
  warn "--workdir=$workdir is on the VM's disk, which --delete deletes with the VM: use --mount-bucket=BUCKET --workdir=/gcs/BUCKET/runs/NAME to keep the run."
fi

stamp=$(date +%Y%m%d-%H%M%S)
run_id="$name-$stamp"     # names this launch's trainers on the workers
log=${log:-$repo_root/runs/launch/$run_id.log}
tarball="${TMPDIR:-/tmp}/practice_jax-$run_id.tar.gz"

if ((!dry_run)); then
  mkdir -p "$(dirname "$log")"
  if ! ssh-add -l 2>/dev/null | grep -q google_compute_engine; then
    warn "your ssh agent does not hold ~/.ssh/google_compute_engine, and gcloud ssh --worker=all needs it there to reach the workers in parallel: run eval \"\$(ssh-agent -s)\" && ssh-add ~/.ssh/google_compute_engine (gcloud makes the key at its first ssh)."
  fi
fi

ssh_all() {  # ssh_all RUNNER REMOTE_COMMAND: runs it on every worker
  "$1" "${gcloud_tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command "$2"
}

worker() {  # the remote command that runs WORKER_PROGRAM with these arguments
  printf '%s' "bash -c $(shell_quote "$WORKER_PROGRAM") tpu_vm_worker $(shell_quote "$@")"
}

if ((queued)); then
  create_vm=("${gcloud_queued[@]}" create "$name" "--node-id=$name" "${where[@]}"
    "--accelerator-type=$accelerator_type" "--runtime-version=$version"
    "--valid-until-duration=$queue_timeout")
  describe_created=("${gcloud_queued[@]}" describe "$name" "${where[@]}")
  delete_vm=("${gcloud_queued[@]}" delete "$name" "${where[@]}" --force --quiet)
else
  create_vm=("${gcloud_tpu[@]}" create "$name" "${where[@]}"
    "--accelerator-type=$accelerator_type" "--version=$version")
  describe_created=("${describe_vm[@]}")
  delete_vm=("${gcloud_tpu[@]}" delete "$name" "${where[@]}" --quiet)
fi
if ((spot)); then create_vm+=(--spot); fi

# --- clean-up: the trainers, the local tarball, and with --delete the VM -----------------
vm_state=none        # none, creating (asked for, not known to exist yet), exists
exec 3>&1 4>&2       # the terminal's output, for the clean-up
trainers_started=0
interrupted=0

delete_the_vm() {
  if [[ $vm_state == creating ]]; then
    # Interrupted or failed while being created: the creation may go on server-side.
    echo "$PROG: looking for $name, which was being created, to delete it:" >&2
    if ! run "${describe_created[@]}" "--format=value(state)" >/dev/null 2>&1; then
      echo "$PROG: $name does not exist: nothing to delete." >&2
      return 0
    fi
  fi
  if run "${delete_vm[@]}"; then return 0; fi
  echo "$PROG: error: could not delete TPU VM $name; delete it yourself: $(shell_quote "${delete_vm[@]}")" >&2
  return 1
}

cleanup() {
  local status=$?
  trap - EXIT
  exec 1>&3 2>&4   # the terminal's output again, should a signal come during run_logged
  # A second Ctrl-C cuts the wait for the trainers short, but not the rest of the clean-up.
  trap 'interrupted=130' INT
  trap 'interrupted=143' TERM
  if [[ -n $child ]]; then   # the command a signal interrupted (gcloud, which goes on server-side)
    kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  rm -f "$tarball"
  if ((trainers_started && status != 0 && !dry_run)); then
    echo "$PROG: stopping launch $run_id on every worker (each trainer saves a checkpoint first; Ctrl-C again to stop waiting):" >&2
    if ! ssh_all run_logged "$(worker stop "$run_id" "$STOP_TIMEOUT_S")"; then
      echo "$PROG: error: could not stop the trainers on every worker; they may still be running: launch/tpu_vm.sh --name=$name --zone=$zone${project:+ --project=$project} --stop" >&2
    fi
  fi
  if ((delete)) && [[ $vm_state != none ]]; then
    delete_the_vm || status=1
  elif ((!dry_run && queued)) && [[ $vm_state != none ]] && ((interrupted || status != 0)); then
    echo "$PROG: the queued resource $name stays (no --delete); still waiting, it becomes a billed TPU VM when capacity frees up; delete it with: $(shell_quote "${delete_vm[@]}")" >&2
  elif ((!dry_run)) && [[ $vm_state == creating ]] && ((interrupted)); then
    echo "$PROG: TPU VM $name goes on being created server-side and stays (no --delete); delete it with: $(shell_quote "${delete_vm[@]}")" >&2
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'interrupted=130; exit 130' INT
trap 'interrupted=143; exit 143' TERM

# --- --attach and --stop: the trainers of an earlier launch -------------------------------
if [[ $mode != run ]]; then
  if ((delete)); then vm_state=exists; fi
  if [[ $mode == attach ]]; then
    ssh_all run "$(worker attach any)"
  else
    ssh_all run "$(worker stop any "$STOP_TIMEOUT_S")"
  fi
  exit 0
fi

if ((dry_run)); then
  echo "# TPU VM $name: ${accelerator_type:-its accelerator type}${version:+, $version}, in $zone${project:+, project $project}"
  echo "# scp and ssh address every worker of the VM (--worker=all); git archive runs here"
fi

# --- 1. the VM ------------------------------------------------------------------------
give_up_queue() {  # the queued request is deleted: it would become a VM nobody uses
  echo "$PROG: error: $*" >&2
  run "${delete_vm[@]}" || true
  vm_state=none
  exit 1
}

wait_until_active() {
  local state waited=0
  if ((dry_run)); then
    echo "# every ${POLL_S} s, until the state is ACTIVE (at most $queue_timeout, then the request is deleted):"
    echo "+ $(shell_quote "${describe_created[@]}" "--format=value(state.state)")"
    return
  fi
  while :; do
    state=$("${describe_created[@]}" "--format=value(state.state)") || state=unknown
    case $state in
      ACTIVE) return ;;
      FAILED | SUSPENDING | SUSPENDED)
        give_up_queue "the queued resource $name ended in state $state (see $(shell_quote "${describe_created[@]}")): deleting it; try another zone or --spot." ;;
    esac
    if ((waited >= queue_timeout_s)); then
      give_up_queue "no $accelerator_type capacity in $zone within --queue-timeout=$queue_timeout (state $state): deleting the request; try another zone, --spot, or a longer --queue-timeout."
    fi
    echo "$PROG: queued resource $name: $state, waited ${waited} s of $queue_timeout_s s" >&2
    sleep "$POLL_S"
    waited=$((waited + POLL_S))
  done
}

if ((skip_create)); then
  vm_state=exists
else
  # A VM of that name may be someone else's: never create over, or delete, it.
  if ((dry_run)); then
    echo "# the name must be free (this must fail with NOT_FOUND):"
    echo "+ $(shell_quote "${describe_created[@]}" "--format=value(state)")"
  elif existing=$("${describe_created[@]}" "--format=value(state)" 2>/dev/null); then
    die "TPU VM $name exists already in $zone (state ${existing:-unknown}): pass --skip-create to use it, or another --name."
  fi
  vm_state=creating      # from here a Ctrl-C, with --delete, deletes what is being made
  if ! run "${create_vm[@]}"; then
    echo "$PROG: error: could not create TPU VM $name ($accelerator_type in $zone); if the zone is out of capacity, try --queued, --spot, or another zone." >&2
    exit 1
  fi
  if ((queued)); then wait_until_active; fi
  vm_state=exists
fi

# --- 2. the bucket, mounted on every worker --------------------------------------------
if [[ -n $mount_bucket ]]; then
  mount_point="/gcs/$mount_bucket"
  # Cloud Storage FUSE's apt repository, as Google's installation guide sets it up.
  # shellcheck disable=SC2016  # $(lsb_release ...) runs on the worker
  install_gcsfuse='echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -c -s) main" | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null && curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null && sudo apt-get -o DPkg::Lock::Timeout=300 update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq gcsfuse'
  mount="{ command -v gcsfuse >/dev/null 2>&1 || { $install_gcsfuse; }; } && { mountpoint -q $mount_point || { sudo mkdir -p $mount_point && sudo chown \"\$(id -u):\$(id -g)\" $mount_point && gcsfuse --implicit-dirs --rename-dir-limit=200000 $mount_bucket $mount_point; }; }"
  ssh_all run "$mount"
fi

# --- 3. code and 4. installation on every worker ----------------------------------------
if ((!skip_setup)); then
  if [[ -n $repo ]]; then
    fetch="rm -rf $REMOTE_DIR && git clone --quiet $(shell_quote "$repo") $REMOTE_DIR"
    if [[ -n $ref ]]; then
      fetch+=" && git -C $REMOTE_DIR checkout --quiet $(shell_quote "$ref")"
    fi
    ssh_all run "$fetch"
  else
    run git -C "$repo_root" archive --format=tar.gz "--output=$tarball" HEAD
    run "${gcloud_tpu[@]}" scp "$tarball" "$name:$REMOTE_TARBALL" "${where[@]}" --worker=all
    ssh_all run "rm -rf $REMOTE_DIR && mkdir -p $REMOTE_DIR && tar -xzf $REMOTE_TARBALL -C $REMOTE_DIR && rm -f $REMOTE_TARBALL"
  fi
  install="cd $REMOTE_DIR && { [ -x $REMOTE_VENV/bin/python ] || { PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --user --quiet --upgrade uv && mkdir -p $REMOTE_VENVS && python3 -m uv venv --seed --python $(shell_quote "$python_version") $REMOTE_VENV; }; } && $REMOTE_VENV/bin/python -m pip install --quiet --upgrade 'jax[tpu]' -e ."
  ssh_all run "$install"
fi

# --- 5. the run, on every worker: started detached, then followed --------------------------
trainer=(env)
if [[ -n $tfds_data_dir ]]; then trainer+=("TFDS_DATA_DIR=$tfds_data_dir"); fi
trainer+=(PYTHONUNBUFFERED=1)
main=(-m practice_jax.main "--config=$config" "--workdir=$workdir" ${main_args[@]+"${main_args[@]}"})
remote_run="cd $REMOTE_DIR && $(worker start "$run_id") $(shell_quote "${trainer[@]}") $REMOTE_VENV/bin/python $(shell_quote "${main[@]}")"
if ((!dry_run)); then
  echo "$PROG: output is also appended to $log; Ctrl-C stops the trainers (they save a checkpoint first)" >&2
fi
trainers_started=1
ssh_all run_logged "$remote_run"
