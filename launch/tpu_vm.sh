#!/usr/bin/env bash
# Train practice_jax on a Cloud TPU VM (one host or a multi-host pod slice).
#
#   launch/tpu_vm.sh --config=configs/mnist.py --mount-bucket=BUCKET \
#       --workdir=/gcs/BUCKET/runs/mnist --tfds-data-dir=gs://BUCKET/tensorflow_datasets --delete
#
# Creates the VM, with --mount-bucket mounts a Cloud Storage bucket at /gcs/BUCKET on every
# worker (Cloud Storage FUSE: practice_jax writes its workdir through the file system, and
# every process of a multi-host run writes its checkpoint shards into the same folder), copies this repository's HEAD (a `git archive` tarball) or clones
# --repo on every worker, installs it with jax[tpu] in a virtual environment on every
# worker, then runs `python -m practice_jax.main` on every worker at once (--worker=all).
# On a pod slice, practice_jax.main calls jax.distributed.initialize() itself.
# Run with --help for every option; --dry-run prints the commands instead of running them.
#
# Works with bash 3.2 (macOS) and later; needs gcloud (not for --dry-run) and git.

set -euo pipefail

readonly PROG="launch/tpu_vm.sh"
readonly REMOTE_DIR="practice_jax"                      # on each worker, in the home folder
readonly REMOTE_TARBALL="practice_jax.tar.gz"
# shellcheck disable=SC2016  # $HOME is expanded by the worker's shell, not here
readonly REMOTE_VENVS='"$HOME"/.venvs'
readonly REMOTE_VENV="$REMOTE_VENVS/practice_jax"

usage() {
  cat <<'EOF'
Usage: launch/tpu_vm.sh --config=CONFIG --workdir=WORKDIR [options] [-- MAIN_ARGS...]

Creates a Cloud TPU VM, copies the code to every worker, installs it, and runs
  python -m practice_jax.main --config=CONFIG --workdir=WORKDIR MAIN_ARGS...
on every worker (gcloud ... --worker=all); the output is streamed and appended to a
local log file.

Required:
  --config=PATH          experiment config, relative to the repository root
                         (e.g. configs/mnist.py)
  --workdir=PATH         where the run writes, a folder (not gs://: practice_jax writes
                         it through the file system); use a mounted bucket,
                         /gcs/BUCKET/runs/NAME with --mount-bucket=BUCKET: the VM's
                         disk is lost with the VM, and on a multi-host slice every
                         worker must write its checkpoint shards into the same folder

TPU VM:
  --name=NAME            VM name (default: practice-jax)
  --zone=ZONE            (default: us-central2-b; the zone must offer the accelerator)
  --accelerator-type=T   v4-8, v4-32, v5litepod-16, v5p-8, v6e-8 ... (default: v4-8)
  --version=RUNTIME      TPU software version (default: from the accelerator type:
                         tpu-ubuntu2204-base for v2/v3/v4, v2-alpha-tpuv5-lite for v5e,
                         v2-alpha-tpuv5 for v5p, v2-alpha-tpuv6e for v6e)
  --project=PROJECT      Google Cloud project (default: gcloud's configured project)
  --spot                 create a Spot VM (cheaper; may be preempted)
  --skip-create          reuse an existing VM called NAME
  --delete               delete the VM at the end, also when a step fails or on Ctrl-C

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

Other:
  --log=FILE             local log of the run's output
                         (default: runs/launch/NAME-DATE-TIME.log in the repository)
  --dry-run              print every command (shell-quoted, prefixed with "+ ")
                         instead of running it; needs no gcloud
  -h, --help             this help
  -- MAIN_ARGS...        passed to practice_jax.main as they are, e.g.
                         -- --config.num_epochs=5 --config_change=continue

Examples:
  launch/tpu_vm.sh --accelerator-type=v4-32 --config=configs/cifar10_resnet18.py \
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

# Runs a command, or under --dry-run prints it.
run() {
  if ((dry_run)); then
    echo "+ $(shell_quote "$@")"
  else
    echo "+ $(shell_quote "$@")" >&2
    "$@"
  fi
}

# Runs a command with its output also appended to $log, or under --dry-run prints it.
run_logged() {
  if ((dry_run)); then
    echo "+ $(shell_quote "$@") 2>&1 | tee -a $(shell_quote "$log")"
  else
    echo "+ $(shell_quote "$@")" >&2
    "$@" 2>&1 | tee -a "$log"
  fi
}

default_version() {
  case $1 in
    v5litepod-* | v5e-*) echo "v2-alpha-tpuv5-lite" ;;
    v5p-*) echo "v2-alpha-tpuv5" ;;
    v6e-*) echo "v2-alpha-tpuv6e" ;;
    *) echo "tpu-ubuntu2204-base" ;;
  esac
}

# --- arguments --------------------------------------------------------------------
name="practice-jax"
zone="us-central2-b"
accelerator_type="v4-8"
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
spot=0
skip_create=0
skip_setup=0
delete=0
dry_run=0
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
    --skip-create) skip_create=1 ;;
    --skip-setup) skip_setup=1 ;;
    --delete) delete=1 ;;
    --*=*) set_option "${1%%=*}" "${1#*=}" ;;
    --name | --zone | --accelerator-type | --version | --project | --config | --workdir | \
      --tfds-data-dir | --mount-bucket | --repo | --ref | --python | --log)
      if (($# < 2)) || [[ $2 == -* ]]; then die "$1 needs a value (see --help)."; fi
      set_option "$1" "$2"
      shift ;;
    *) die "Unknown argument $1; options are --name=VALUE style, and arguments for practice_jax.main go after -- (see --help)." ;;
  esac
  shift
done

[[ -n $config ]] || die "Missing --config: pass the experiment, e.g. --config=configs/mnist.py."
[[ -n $workdir ]] || die "Missing --workdir: pass where the run writes, e.g. --mount-bucket=BUCKET --workdir=/gcs/BUCKET/runs/mnist."
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
[[ $name =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] ||
  die "--name=$name is not a valid TPU name: lowercase letters, digits and hyphens, starting with a letter."
[[ -z $ref || -n $repo ]] || die "--ref needs --repo (the copied checkout is always HEAD)."
[[ $config != /* ]] || die "--config=$config must be relative to the repository root (the workers have their own copy)."
version=${version:-$(default_version "$accelerator_type")}

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z $repo ]] && ((!skip_setup)) && [[ ! -f $repo_root/${config%%:*} ]]; then
  die "Config file ${config%%:*} not found in $repo_root; pass a path relative to the repository root, e.g. --config=configs/mnist.py."
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
elif ((delete)); then
  warn "--workdir=$workdir is on the VM's disk, which --delete deletes with the VM: use --mount-bucket=BUCKET --workdir=/gcs/BUCKET/runs/NAME to keep the run."
fi

stamp=$(date +%Y%m%d-%H%M%S)
log=${log:-$repo_root/runs/launch/$name-$stamp.log}
tarball="${TMPDIR:-/tmp}/practice_jax-$name-$stamp.tar.gz"

if ((!dry_run)); then
  command -v gcloud >/dev/null 2>&1 ||
    die "gcloud not found: install the Google Cloud SDK (https://cloud.google.com/sdk/docs/install), or use --dry-run."
  mkdir -p "$(dirname "$log")"
fi

gcloud_tpu=(gcloud compute tpus tpu-vm)
where=("--zone=$zone")
if [[ -n $project ]]; then where+=("--project=$project"); fi

ssh_all() {  # ssh_all RUNNER REMOTE_COMMAND: runs it on every worker
  "$1" "${gcloud_tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command "$2"
}

# --- clean-up: the local tarball, and with --delete the VM ---------------------------
cleanup() {
  local status=$?
  trap - EXIT
  rm -f "$tarball"
  if ((delete && vm_exists)); then
    if ! run "${gcloud_tpu[@]}" delete "$name" "${where[@]}" --quiet; then
      echo "$PROG: error: could not delete TPU VM $name; delete it yourself:" \
        "$(shell_quote "${gcloud_tpu[@]}" delete "$name" "${where[@]}")" >&2
      status=1
    fi
  fi
  exit "$status"
}
vm_exists=0
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ((dry_run)); then
  echo "# TPU VM $name: $accelerator_type, $version, in $zone${project:+, project $project}"
  echo "# scp and ssh address every worker of the VM (--worker=all); git archive runs here"
fi

# --- 1. the VM ------------------------------------------------------------------------
if ((skip_create)); then
  vm_exists=1
else
  create=("${gcloud_tpu[@]}" create "$name" "${where[@]}"
    "--accelerator-type=$accelerator_type" "--version=$version")
  if ((spot)); then create+=(--spot); fi
  run "${create[@]}"
  # Only now: a failed create (say, the name is taken) must not delete someone's VM.
  vm_exists=1
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
    if ((!dry_run)) && [[ -n $(git -C "$repo_root" status --porcelain --untracked-files=no) ]]; then
      warn "uncommitted changes are not copied: the workers get HEAD ($(git -C "$repo_root" rev-parse --short HEAD))."
    fi
    run git -C "$repo_root" archive --format=tar.gz "--output=$tarball" HEAD
    run "${gcloud_tpu[@]}" scp "$tarball" "$name:$REMOTE_TARBALL" "${where[@]}" --worker=all
    ssh_all run "rm -rf $REMOTE_DIR && mkdir -p $REMOTE_DIR && tar -xzf $REMOTE_TARBALL -C $REMOTE_DIR && rm -f $REMOTE_TARBALL"
  fi
  install="cd $REMOTE_DIR && { [ -x $REMOTE_VENV/bin/python ] || { PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --user --quiet --upgrade uv && mkdir -p $REMOTE_VENVS && python3 -m uv venv --seed --python $(shell_quote "$python_version") $REMOTE_VENV; }; } && $REMOTE_VENV/bin/python -m pip install --quiet --upgrade 'jax[tpu]' -e ."
  ssh_all run "$install"
fi

# --- 5. the run, on every worker --------------------------------------------------------
remote_run="cd $REMOTE_DIR && "
if [[ -n $tfds_data_dir ]]; then
  remote_run+="TFDS_DATA_DIR=$(shell_quote "$tfds_data_dir") "
fi
remote_run+="PYTHONUNBUFFERED=1 $REMOTE_VENV/bin/python -m practice_jax.main $(shell_quote "--config=$config" "--workdir=$workdir" ${main_args[@]+"${main_args[@]}"})"
if ((!dry_run)); then
  echo "$PROG: output is also appended to $log" >&2
fi
ssh_all run_logged "$remote_run"
