"""launch/: the TPU VM and SLURM scripts, run with --dry-run or against fake gcloud/srun
(no network, no cloud, no cluster; a second each)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO

TPU = REPO / "launch" / "tpu_vm.sh"
SLURM = REPO / "launch" / "gpu_cluster.sbatch"
BASH = shutil.which("bash")
# Quotes, spaces and a dollar sign: they must reach practice_jax.main unchanged.
PASSTHROUGH = ["--config.num_epochs=2", "--config.name=it's a $HOME test", "--config_change=continue"]


TRIPWIRE = """#!/bin/sh
echo "test_launch: the real $(basename "$0") was called: $*" >&2
exit 99
"""


@pytest.fixture(scope="module")
def tripwire(tmp_path_factory):
  """A PATH folder whose gcloud and srun fail loudly, so that no test reaches real ones."""
  folder = tmp_path_factory.mktemp("tripwire")
  for tool in ("gcloud", "srun"):
    write_executable(folder / tool, TRIPWIRE)
  return folder


@pytest.fixture(autouse=True)
def _no_real_cloud(tripwire, monkeypatch):
  monkeypatch.setenv("PATH", f"{tripwire}{os.pathsep}{os.environ['PATH']}")


@pytest.fixture(scope="module", autouse=True)
def tpu_repo(tmp_path_factory):
  """A git repository holding launch/tpu_vm.sh and configs/, committed: the script copies
  HEAD to the workers and refuses a config that is not committed as it is, so it runs from
  here, apart from whatever is being edited in this checkout."""
  global TPU_REPO
  TPU_REPO = tmp_path_factory.mktemp("repo")
  (TPU_REPO / "launch").mkdir()
  shutil.copy(TPU, TPU_REPO / "launch" / TPU.name)
  shutil.copytree(REPO / "configs", TPU_REPO / "configs")
  git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "-C", str(TPU_REPO)]
  for command in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "test"]):
    subprocess.run(git + command, check=True, capture_output=True)
  return TPU_REPO


def process_env(env=None, path_prefix=None) -> dict[str, str]:
  full_env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
  full_env.pop("JAX_LOCAL_DEVICE_IDS", None)
  full_env.pop("SSH_AUTH_SOCK", None)
  if path_prefix is not None:
    full_env["PATH"] = f"{path_prefix}{os.pathsep}{full_env['PATH']}"
  full_env.update(env or {})
  return full_env


def script_command(script, *args) -> tuple[list[str], object]:
  """The command line and folder to run a script in (tpu_vm.sh: from the test repository)."""
  cwd = REPO
  if script == TPU:
    script, cwd = TPU_REPO / "launch" / TPU.name, TPU_REPO
  return [BASH, str(script), *map(str, args)], cwd


def run_script(script, *args, env=None, path_prefix=None):
  argv, cwd = script_command(script, *args)
  return subprocess.run(argv, cwd=cwd, env=process_env(env, path_prefix),
                        capture_output=True, text=True, timeout=60)


def commands(stdout: str) -> list[list[str]]:
  """The '+ ' lines of a dry run, split as a shell would (so they must be well quoted); a
  command whose quoted words hold newlines goes on over the next lines."""
  found, pending = [], None
  for line in stdout.splitlines():
    if pending is not None:
      pending += "\n" + line
    elif line.startswith("+ "):
      pending = line[2:]
    else:
      continue
    try:
      found.append(shlex.split(pending))
      pending = None
    except ValueError:   # an open quote: the command goes on
      pass
  assert pending is None, pending
  return found


def gcloud_calls(stdout: str, verb: str) -> list[list[str]]:
  return [c for c in commands(stdout) if c[:5] == ["gcloud", "compute", "tpus", "tpu-vm", verb]]


def remote_command(call: list[str]) -> list[str]:
  """The words of an ssh call's --command, split as the worker's shell would."""
  words = call[call.index("--command") + 1]
  return shlex.split(words)


def write_executable(path, text: str):
  path.write_text(text)
  path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def tpu_args(*extra):
  return ["--config=configs/mnist.py", "--mount-bucket=bucket", "--workdir=/gcs/bucket/runs/mnist",
          "--tfds-data-dir=gs://bucket/tfds", *extra]


def mount_command(stdout: str) -> str:
  """The --command of the dry run's ssh call that mounts the bucket."""
  calls = [c for c in gcloud_calls(stdout, "ssh") if "gcsfuse" in c[c.index("--command") + 1]]
  assert len(calls) == 1, calls
  assert "--worker=all" in calls[0]
  return calls[0][calls[0].index("--command") + 1]


# --- launch/tpu_vm.sh -----------------------------------------------------------------


def test_tpu_dry_run_creates_copies_installs_runs_and_deletes():
  result = run_script(TPU, *tpu_args("--dry-run", "--delete", "--name=exp-1", "--zone=us-west4-a",
                                     "--accelerator-type=v5litepod-16", "--project=some-project",
                                     "--", *PASSTHROUGH))
  assert result.returncode == 0, result.stderr
  assert "warning" not in result.stderr   # the workdir is in the mounted bucket
  calls = commands(result.stdout)
  create, = gcloud_calls(result.stdout, "create")
  assert create[5] == "exp-1"
  for flag in ("--zone=us-west4-a", "--accelerator-type=v5litepod-16",
               "--version=v2-alpha-tpuv5-lite", "--project=some-project"):
    assert flag in create
  scp, = gcloud_calls(result.stdout, "scp")
  assert "--worker=all" in scp
  assert any(c[:3] == ["git", "-C", str(TPU_REPO)] and "archive" in c and c[-1] == "HEAD" for c in calls)
  tarball = next(c for c in calls if "archive" in c)[-2].removeprefix("--output=")
  assert tarball in scp and "exp-1:practice_jax.tar.gz" in scp
  ssh = gcloud_calls(result.stdout, "ssh")
  assert len(ssh) == 4   # mount, unpack, install, run
  for call in ssh:
    assert call[5] == "exp-1" and "--worker=all" in call and "--zone=us-west4-a" in call
    assert "--project=some-project" in call
  assert calls.index(ssh[0]) < calls.index(scp)   # the bucket is mounted first
  assert "gcsfuse --implicit-dirs --rename-dir-limit=200000 bucket /gcs/bucket" in mount_command(result.stdout)
  ssh = ssh[1:]
  assert "tar -xzf practice_jax.tar.gz" in ssh[0][ssh[0].index("--command") + 1]
  install = ssh[1][ssh[1].index("--command") + 1]
  assert "pip install --quiet --upgrade 'jax[tpu]' -e ." in install
  run = remote_command(ssh[2])
  assert run[:5] == ["cd", "practice_jax", "&&", "bash", "-c"]
  assert run[6:8] == ["tpu_vm_worker", "start"]   # detached, under a pid file (below)
  assert run[9:11] == ["env", "TFDS_DATA_DIR=gs://bucket/tfds"]
  assert "TFDS_DATA_DIR=gs://bucket/tfds" in run
  main = run.index("practice_jax.main")
  assert run[main - 1] == "-m" and run[main - 2].endswith("/.venvs/practice_jax/bin/python")
  assert run[main + 1:] == ["--config=configs/mnist.py", "--workdir=/gcs/bucket/runs/mnist",
                            *PASSTHROUGH]
  assert ssh[2][-5:-1] == ["2>&1", "|", "tee", "-a"]   # streamed, and appended to a local log
  delete, = gcloud_calls(result.stdout, "delete")
  assert calls[-1] == delete
  assert delete[5] == "exp-1" and "--zone=us-west4-a" in delete and "--quiet" in delete


@pytest.mark.parametrize("accelerator, version", [
    ("v4-8", "tpu-ubuntu2204-base"), ("v4-32", "tpu-ubuntu2204-base"),
    ("v5p-8", "v2-alpha-tpuv5"), ("v6e-8", "v2-alpha-tpuv6e")])
def test_tpu_default_runtime_follows_the_accelerator(accelerator, version):
  result = run_script(TPU, *tpu_args("--dry-run", f"--accelerator-type={accelerator}"))
  create, = gcloud_calls(result.stdout, "create")
  assert f"--version={version}" in create and f"--accelerator-type={accelerator}" in create


def test_tpu_defaults_and_explicit_version():
  result = run_script(TPU, *tpu_args("--dry-run", "--version", "tpu-vm-custom"))
  assert result.returncode == 0, result.stderr
  create, = gcloud_calls(result.stdout, "create")
  assert create[5:] == ["practice-jax", "--zone=us-central2-b", "--accelerator-type=v4-8",
                        "--version=tpu-vm-custom"]
  assert not gcloud_calls(result.stdout, "delete")   # only with --delete
  assert not any("--project" in word for call in commands(result.stdout) for word in call)


def test_tpu_skip_create_and_repo_clone():
  result = run_script(TPU, *tpu_args("--dry-run", "--skip-create", "--repo=https://example.com/x.git",
                                     "--ref=v1"))
  assert result.returncode == 0, result.stderr
  assert not gcloud_calls(result.stdout, "create") and not gcloud_calls(result.stdout, "scp")
  _, clone, _, _ = gcloud_calls(result.stdout, "ssh")   # mount, clone, install, run
  clone = remote_command(clone)
  assert ["git", "clone", "--quiet", "https://example.com/x.git", "practice_jax"] == clone[4:9]
  assert clone[-6:] == ["git", "-C", "practice_jax", "checkout", "--quiet", "v1"]


def test_tpu_skip_setup_only_mounts_and_runs():
  result = run_script(TPU, *tpu_args("--dry-run", "--skip-create", "--skip-setup"))
  mount, run = gcloud_calls(result.stdout, "ssh")
  assert "gcsfuse" in mount[mount.index("--command") + 1]   # a reboot unmounts it
  assert "practice_jax.main" in remote_command(run)
  result = run_script(TPU, "--dry-run", "--skip-create", "--skip-setup", "--config=configs/mnist.py",
                      "--workdir=/tmp/run")
  assert result.returncode == 0 and result.stderr == ""   # one worker (v4-8), no --delete
  ssh, = gcloud_calls(result.stdout, "ssh")
  assert "practice_jax.main" in remote_command(ssh)


def test_tpu_mount_bucket_commands():
  command = mount_command(run_script(TPU, *tpu_args("--dry-run")).stdout)
  # Google's apt repository for Cloud Storage FUSE, named after the worker's Ubuntu release
  assert ('"deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt'
          ' gcsfuse-$(lsb_release -c -s) main" | sudo tee /etc/apt/sources.list.d/gcsfuse.list') in command
  assert "https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc" \
         in command
  assert "install -y -qq gcsfuse" in command
  assert command.startswith("{ command -v gcsfuse >/dev/null 2>&1 || {")   # installed only if missing
  assert ("{ mountpoint -q /gcs/bucket || { sudo mkdir -p /gcs/bucket && sudo chown \"$(id -u):$(id -g)\""
          " /gcs/bucket && gcsfuse --implicit-dirs --rename-dir-limit=200000 bucket /gcs/bucket; }; }") in command


FAKE_WORKER_TOOL = f"#!{BASH}\n" + """printf '%s %s\\n' "$(basename "$0")" "$*" >> "$FAKE_LOG"
case $(basename "$0") in
  lsb_release) echo jammy ;;
  curl) echo "KEY" ;;
  mountpoint) [[ -n ${FAKE_MOUNTED:-} ]] ;;
  sudo) if [[ $1 == tee ]]; then cat > /dev/null; fi
        if [[ "$*" == *"install -y -qq gcsfuse"* ]]; then cp "$0" "$(dirname "$0")/gcsfuse"; fi ;;
esac
"""


@pytest.mark.parametrize("installed, mounted", [(False, False), (True, False), (True, True)])
def test_tpu_mount_command_runs_in_a_shell(tmp_path, installed, mounted):
  """Runs the workers' mount command in bash, with fake sudo, apt-get, gcsfuse ..."""
  command = mount_command(run_script(TPU, *tpu_args("--dry-run")).stdout)
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  tools = ["lsb_release", "curl", "mountpoint", "sudo"] + (["gcsfuse"] if installed else [])
  for tool in tools:
    write_executable(bin_dir / tool, FAKE_WORKER_TOOL)
  for tool in ("basename", "dirname", "cat", "cp", "id"):
    (bin_dir / tool).symlink_to(shutil.which(tool))
  log = tmp_path / "log"
  env = {"PATH": str(bin_dir), "FAKE_LOG": str(log), "FAKE_MOUNTED": "1" if mounted else ""}
  result = subprocess.run([BASH, "-c", command], env=env, capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  calls = log.read_text().splitlines()
  installs = [c for c in calls if c.startswith("sudo ") and "apt-get" in c]
  assert len(installs) == (0 if installed else 2)   # update, install
  assert ("lsb_release -c -s" in calls) == (not installed)
  mounts = [c for c in calls if c.startswith("gcsfuse ")]
  if mounted:
    assert mounts == [] and not any("mkdir" in c for c in calls)
  else:
    ids = f"{os.getuid()}:{os.getgid()}"
    assert calls[-3:] == ["sudo mkdir -p /gcs/bucket", f"sudo chown {ids} /gcs/bucket",
                          "gcsfuse --implicit-dirs --rename-dir-limit=200000 bucket /gcs/bucket"]


def test_tpu_refuses_a_gs_workdir():
  result = run_script(TPU, "--dry-run", "--config=configs/mnist.py", "--workdir=gs://b/runs/x")
  assert result.returncode == 2 and "+ gcloud" not in result.stdout
  assert len(result.stderr.strip().splitlines()) == 1
  assert "writes the workdir through the file system" in result.stderr
  assert "--mount-bucket=b --workdir=/gcs/b/runs/x" in result.stderr


@pytest.mark.parametrize("accelerator, workdir, extra, words", [
    ("v4-32", "/tmp/run", [], "each worker's own disk"),
    ("v5litepod-16", "/home/me/run", [], "multi-host run need one folder they all share"),
    ("v4-8", "/tmp/run", ["--delete"], "--delete deletes with the VM"),
    ("v4-32", "/gcs/other/run", ["--mount-bucket=bucket"], "no --mount-bucket=other"),
    ("v4-32", "/gcs/other/run", [], "no --mount-bucket=other"),
])
def test_tpu_warns_about_a_workdir_the_workers_do_not_share(accelerator, workdir, extra, words):
  result = run_script(TPU, "--dry-run", "--config=configs/mnist.py", f"--workdir={workdir}",
                      f"--accelerator-type={accelerator}", *extra)
  assert result.returncode == 0, result.stderr
  assert "warning" in result.stderr and words in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("accelerator", ["v4-8", "v4-32", "v5litepod-16", "v6e-64"])
def test_tpu_mounted_workdir_needs_no_warning(accelerator):
  result = run_script(TPU, *tpu_args("--dry-run", "--delete", f"--accelerator-type={accelerator}"))
  assert result.returncode == 0 and result.stderr == ""


@pytest.mark.parametrize("args, words", [
    (["--workdir=/gcs/b/r"], "Missing --config"),
    (["--config=configs/mnist.py"], "Missing --workdir"),
    (["--config=configs/nope.py", "--workdir=/gcs/b/r"], "configs/nope.py not found"),
    (["--config=configs/mnist.py", "--workdir=/gcs/b/r", "--frobnicate=1"], "Unknown option --frobnicate"),
    (["--config=configs/mnist.py", "--workdir=/gcs/b/r", "stray"], "Unknown argument stray"),
    (["--config=configs/mnist.py", "--workdir=/gcs/b/r", "--zone"], "--zone needs a value"),
    (["--config=configs/mnist.py", "--workdir=/gcs/b/r", "--name=Bad_Name"], "not a valid TPU name"),
    (["--config=configs/mnist.py", "--workdir=gs://b/r"], "is not supported"),
    (["--config=configs/mnist.py", "--workdir=/gcs/b/r", "--mount-bucket=gs://b"], "without gs://"),
    (["--config=configs/mnist.py", "--workdir=/gcs/b/r", "--mount-bucket=My Bucket"], "not a bucket name"),
    (["--config=configs/mnist.py", "--workdir=/gcs/b/r", "--mount-bucket"], "--mount-bucket needs a value"),
])
def test_tpu_bad_arguments_exit_2_with_one_sentence(args, words):
  result = run_script(TPU, "--dry-run", *args)
  assert result.returncode == 2
  assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1
  assert "+ gcloud" not in result.stdout


def test_tpu_help():
  result = run_script(TPU, "--help")
  assert result.returncode == 0 and "Usage: launch/tpu_vm.sh" in result.stdout
  assert "--dry-run" in result.stdout and "--delete" in result.stdout
  assert "--mount-bucket=BUCKET" in result.stdout and "gs://my-bucket/runs" not in result.stdout
  assert "--mount-bucket=my-bucket --workdir=/gcs/my-bucket/runs/resnet" in result.stdout


def test_tpu_without_gcloud_says_so(tmp_path):
  tools = tmp_path / "bin"
  tools.mkdir()
  for tool in ("dirname", "date"):
    (tools / tool).symlink_to(shutil.which(tool))
  result = run_script(TPU, *tpu_args(), env={"PATH": str(tools)})
  assert result.returncode == 2 and "gcloud not found" in result.stderr


# A stand-in gcloud: records every call in $FAKE_STATE/calls; `create` makes the VM (a file
# holding its accelerator type; $FAKE_CREATE_S seconds long, and Ctrl-C leaves it being
# made, as the server goes on); `describe` and `delete` see and remove it; a queued
# resource goes through the states listed in $FAKE_QUEUE, one per describe. `ssh --command`
# runs the launch's commands for the workers here, one per worker ($FAKE_WORKERS), each
# with its own home $FAKE_STATE/workerN and in its own session, as sshd would; Ctrl-C ends
# gcloud, not them. $FAKE_DROP_AFTER: the first run's connection drops after that many
# seconds (its output pipe is closed) and gcloud runs the command again, as it does when
# ssh exits 255.
FAKE_GCLOUD = f"#!{sys.executable}\n" + r'''
import json, os, select, signal, subprocess, sys, time
from pathlib import Path

args = sys.argv[1:]
state = Path(os.environ["FAKE_STATE"])
with open(state / "calls", "a") as f:
  f.write(json.dumps(args) + "\n")
if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:   # as Python does
  signal.signal(signal.SIGINT, lambda *_: os._exit(130))
signal.signal(signal.SIGTERM, lambda *_: os._exit(143))
if os.environ.get("FAKE_FAIL") and os.environ["FAKE_FAIL"] in " ".join(args):
  print("fake failure", file=sys.stderr)
  sys.exit(7)
option = lambda name: next((a.split("=", 1)[1] for a in args if a.startswith(name + "=")), "")
kind, verb = args[2], args[3]
vm, queued = state / "vm", state / "queued"


def on_workers(command, drop_after=None):
  """The workers' output comes through this process, as through ssh: when it ends, their
  writes fail."""
  procs = []
  for i in range(int(os.environ.get("FAKE_WORKERS", "1"))):
    home = state / f"worker{i}"
    procs.append(subprocess.Popen(["bash", "-c", command], cwd=home, env={**os.environ, "HOME": str(home)},
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, start_new_session=True))
  open_fds = [p.stdout.fileno() for p in procs]
  deadline = time.time() + (drop_after if drop_after is not None else 1e9)
  while open_fds and time.time() < deadline:
    for fd in select.select(open_fds, [], [], 0.05)[0]:
      data = os.read(fd, 65536)
      if not data:
        open_fds.remove(fd)
      sys.stdout.buffer.write(data)
      sys.stdout.flush()
  if drop_after is None:
    return max(p.wait() for p in procs)
  for p in procs:
    p.stdout.close()   # the connection is gone; the remote side learns it when it writes
  return 255


if verb == "describe":
  if not (queued if kind == "queued-resources" else vm).exists():
    print("ERROR: NOT_FOUND", file=sys.stderr)
    sys.exit(1)
  if "acceleratorType" in option("--format"):
    print(vm.read_text())
  elif "state.state" in option("--format"):
    first, *rest = queued.read_text().split(",")
    print(first)
    if rest:
      queued.write_text(",".join(rest))
    if first == "ACTIVE":
      vm.write_text(option("--accelerator-type") or "v4-8")
  else:
    print("READY")
elif verb == "create":
  if kind == "queued-resources":
    queued.write_text(os.environ.get("FAKE_QUEUE", "ACTIVE"))
  else:
    vm.write_text(option("--accelerator-type"))
  time.sleep(float(os.environ.get("FAKE_CREATE_S", "0")))
elif verb == "delete":
  vm.unlink(missing_ok=True)
  queued.unlink(missing_ok=True)
elif verb == "ssh":
  command = args[args.index("--command") + 1]
  if "tpu_vm_worker" in command or "practice_jax.main" in command:
    drop = os.environ.get("FAKE_DROP_AFTER")
    if drop and "practice_jax.main" in command and not (state / "dropped").exists():
      (state / "dropped").touch()
      if on_workers(command, float(drop)) == 255:
        print("ssh: connection lost (exit status 255); running the command again", file=sys.stderr)
    sys.exit(on_workers(command))
'''

# The workers' python: a trainer that prints steps; SIGTERM makes it "save" and exit 143.
FAKE_TRAINER = f"#!{BASH}\n" + r'''me=$(basename "$HOME")
echo $$ >> "$HOME/trainer.starts"
trap 'echo "$me: SIGTERM: checkpoint saved at step $step"; echo "$step" >> "$HOME/trainer.saved"; exit 143' TERM
for step in $(seq 1 "${FAKE_STEPS:-30}"); do echo "$me: step $step"; sleep "${FAKE_STEP_S:-0.1}"; done
echo "$me: done"
exit "${FAKE_EXIT:-0}"
'''


class Cloud:
  """The stand-in gcloud on PATH, its state folder, and two workers' home folders."""

  def __init__(self, root):
    self.state = root / "cloud"
    self.state.mkdir()
    self.bin = root / "bin"
    self.bin.mkdir()
    write_executable(self.bin / "gcloud", FAKE_GCLOUD)
    self.workers = []
    for i in range(2):
      home = self.state / f"worker{i}"
      (home / "practice_jax").mkdir(parents=True)
      (home / ".venvs" / "practice_jax" / "bin").mkdir(parents=True)
      write_executable(home / ".venvs" / "practice_jax" / "bin" / "python", FAKE_TRAINER)
      self.workers.append(home)
    self.env = {"FAKE_STATE": str(self.state), "TMPDIR": str(root),
                "PRACTICE_JAX_LAUNCH_POLL_S": "0"}

  def calls(self) -> list[str]:
    path = self.state / "calls"
    return [" ".join(json.loads(line)) for line in path.read_text().splitlines()] if path.exists() else []

  def verbs(self) -> list[str]:
    return [c.split()[3] for c in self.calls()]

  def run(self, *args, **env):
    return run_script(TPU, *args, env={**self.env, **env}, path_prefix=self.bin)

  def start(self, *args, **env):
    argv, cwd = script_command(TPU, *args)
    return subprocess.Popen(argv, cwd=cwd, env=process_env({**self.env, **env}, self.bin),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)   # a terminal's foreground process group

  def lines(self, worker: int, name: str) -> list[str]:
    path = self.workers[worker] / name
    return path.read_text().split() if path.exists() else []

  def wait_for(self, predicate, timeout=30):
    deadline = time.time() + timeout
    while not predicate():
      assert time.time() < deadline, "timed out"
      time.sleep(0.05)


def alive(pid: str) -> bool:
  try:
    os.kill(int(pid), 0)
  except ProcessLookupError:
    return False
  return True


@pytest.fixture
def cloud(tmp_path):
  return Cloud(tmp_path)


def test_tpu_real_run_streams_logs_and_cleans_up(tmp_path, cloud):
  log = tmp_path / "logs" / "run.log"
  result = cloud.run(*tpu_args("--delete", f"--log={log}", "--", *PASSTHROUGH))
  assert result.returncode == 0, result.stderr
  assert cloud.verbs() == ["describe", "create", "ssh", "scp", "ssh", "ssh", "ssh", "delete"]
  assert "worker0: done" in result.stdout and "worker0: done" in log.read_text()
  assert not list(tmp_path.glob("*.tar.gz"))   # the tarball is removed
  assert len(cloud.lines(0, "trainer.starts")) == 1
  assert "ssh-add ~/.ssh/google_compute_engine" in result.stderr   # no ssh agent here


def test_tpu_failure_still_deletes_the_vm(tmp_path, cloud):
  result = cloud.run(*tpu_args("--delete", f"--log={tmp_path / 'run.log'}"), FAKE_EXIT="7")
  assert result.returncode == 7   # the trainer's exit status, through the worker's keeper
  verbs = cloud.verbs()
  assert verbs[-2:] == ["ssh", "delete"] and verbs.count("delete") == 1   # stop (a no-op), delete
  assert "tpu_vm_worker stop" in cloud.calls()[-2]


def test_tpu_failed_create_deletes_nothing(tmp_path, cloud):
  result = cloud.run(*tpu_args("--delete", f"--log={tmp_path / 'run.log'}"), FAKE_FAIL="create")
  assert result.returncode == 1 and "try --queued, --spot, or another zone" in result.stderr
  assert cloud.verbs() == ["describe", "create", "describe"]   # nothing was made: no delete


def test_tpu_never_touches_an_existing_vm_of_that_name(tmp_path, cloud):
  (cloud.state / "vm").write_text("v4-8")   # someone's VM
  result = cloud.run(*tpu_args("--delete", f"--log={tmp_path / 'run.log'}"))
  assert result.returncode == 2 and "exists already" in result.stderr and "--skip-create" in result.stderr
  assert cloud.verbs() == ["describe"]


# Item 1: interrupting the run stops the trainers; a reconnection finds the running one.


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_tpu_interrupt_stops_the_trainers_on_every_worker(tmp_path, cloud, signum):
  script = cloud.start(*tpu_args("--delete", f"--log={tmp_path / 'run.log'}"), FAKE_WORKERS="2",
                       FAKE_STEPS="300")
  cloud.wait_for(lambda: all(cloud.lines(i, "trainer.starts") for i in (0, 1)))
  if signum == signal.SIGINT:
    os.killpg(script.pid, signal.SIGINT)   # Ctrl-C: the terminal's whole foreground group
  else:
    script.send_signal(signal.SIGTERM)
  out, err = script.communicate(timeout=60)
  assert script.returncode == 128 + signum, err[-3000:]
  print(out[-3000:], err[-3000:])
  for i in (0, 1):
    pid, = cloud.lines(i, "trainer.starts")
    assert cloud.lines(i, "trainer.saved"), err   # stopped by SIGTERM: it saved
    assert not alive(pid)
  assert "checkpoint saved at step" in out   # the stop followed each trainer to its end
  assert cloud.verbs()[-2:] == ["ssh", "delete"]   # stopped first, then deleted


def test_tpu_dropped_connection_follows_the_running_trainer(tmp_path, cloud):
  log = tmp_path / "run.log"
  result = cloud.run(*tpu_args(f"--log={log}"), FAKE_WORKERS="2", FAKE_STEPS="25",
                     FAKE_DROP_AFTER="0.8")
  assert result.returncode == 0, result.stderr
  output = result.stdout   # gcloud's, the workers' and the trainers', also in the log
  assert "connection lost" in output and output == log.read_text()
  for i in (0, 1):
    assert len(cloud.lines(i, "trainer.starts")) == 1   # gcloud's re-run started no second one
    assert f"worker{i}: done" in output
  assert "running already" in output


def test_tpu_refuses_to_start_beside_another_launch_s_trainer_and_stop_ends_it(tmp_path, cloud):
  # another launch's trainer, with a parent that reaps it, as the worker's keeper does
  other = subprocess.Popen([BASH, "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE, text=True,
                           start_new_session=True)
  try:
    trainer = other.stdout.readline().strip()
    keeper = cloud.workers[0] / ".practice_jax_launch"
    keeper.mkdir()
    (keeper / "trainer.pid").write_text(f"{trainer} practice-jax-20250101-000000\n")
    (keeper / "practice-jax-20250101-000000.log").write_text("step 1\n")
    (cloud.state / "vm").write_text("v4-8")
    result = cloud.run(*tpu_args("--skip-create", "--skip-setup", f"--log={tmp_path / 'run.log'}"))
    assert result.returncode == 3 and "still running" in result.stderr
    assert cloud.lines(0, "trainer.starts") == []
    result = cloud.run("--stop", "--name=practice-jax")
    assert result.returncode == 0, result.stderr
    assert not alive(trainer) and "stopping the trainer of launch practice-jax-20250101-000000" in result.stdout
    assert cloud.verbs()[-1] == "ssh" and "delete" not in cloud.verbs()
    result = cloud.run("--attach")
    assert result.returncode == 0 and "no trainer is running" in result.stderr
  finally:
    other.kill()


# Item 2: Ctrl-C while the VM is being created, with --delete, deletes it.


@pytest.mark.parametrize("queued", [False, True], ids=["create", "queued"])
def test_tpu_ctrl_c_during_create_deletes_what_is_being_made(tmp_path, cloud, queued):
  extra = ["--queued"] if queued else []
  script = cloud.start(*tpu_args("--delete", *extra, f"--log={tmp_path / 'run.log'}"), FAKE_CREATE_S="30")
  cloud.wait_for(lambda: (cloud.state / ("queued" if queued else "vm")).exists())
  os.killpg(script.pid, signal.SIGINT)
  _, err = script.communicate(timeout=60)
  assert script.returncode == 130, err
  assert cloud.verbs() == ["describe", "create", "describe", "delete"]
  assert not (cloud.state / "vm").exists() and not (cloud.state / "queued").exists()
  assert ("queued-resources delete" in cloud.calls()[-1]) == queued


def test_tpu_ctrl_c_during_create_without_delete_says_how_to_delete(tmp_path, cloud):
  script = cloud.start(*tpu_args(f"--log={tmp_path / 'run.log'}"), FAKE_CREATE_S="30")
  cloud.wait_for(lambda: (cloud.state / "vm").exists())
  os.killpg(script.pid, signal.SIGINT)
  _, err = script.communicate(timeout=60)
  assert script.returncode == 130 and "delete" not in cloud.verbs()
  assert "goes on being created server-side" in err
  assert "gcloud compute tpus tpu-vm delete practice-jax --zone=us-central2-b --quiet" in err


# Item 6: what the workers get is checked before anything is created.


@pytest.mark.parametrize("change, words", [
    ("untracked", "is not committed"), ("modified", "has uncommitted changes")])
def test_tpu_refuses_a_config_the_workers_would_not_get(tmp_path, cloud, tpu_repo, change, words):
  config = tpu_repo / "configs" / ("new_config.py" if change == "untracked" else "mnist.py")
  original = config.read_text() if config.exists() else None
  config.write_text((original or "") + "\n# edited\n")
  try:
    name = config.relative_to(tpu_repo)
    result = cloud.run(f"--config={name}", "--mount-bucket=bucket", "--workdir=/gcs/bucket/r", "--delete")
    dry = run_script(TPU, f"--config={name}", "--workdir=/gcs/bucket/r", "--dry-run")
  finally:
    if original is None:
      config.unlink()
    else:
      config.write_text(original)
  assert result.returncode == 2 and words in result.stderr and cloud.verbs() == []
  assert len(result.stderr.strip().splitlines()) == 1
  assert dry.returncode == 2 and words in dry.stderr and "+ gcloud" not in dry.stdout


# Item 7: queued resources, spot capacity, known runtimes, the type of an existing VM.


def test_tpu_queued_resource_waits_until_active(tmp_path, cloud):
  result = cloud.run(*tpu_args("--queued", "--spot", "--queue-timeout=2h", "--delete", "--accelerator-type=v5litepod-16",
                               f"--log={tmp_path / 'run.log'}"),
                     FAKE_QUEUE="WAITING_FOR_RESOURCES,WAITING_FOR_RESOURCES,PROVISIONING,ACTIVE")
  assert result.returncode == 0, result.stderr
  calls = cloud.calls()
  create = next(c for c in calls if c.startswith("compute tpus queued-resources create")).split()
  for word in ("practice-jax", "--node-id=practice-jax", "--accelerator-type=v5litepod-16",
               "--runtime-version=v2-alpha-tpuv5-lite", "--valid-until-duration=2h", "--spot"):
    assert word in create
  assert cloud.verbs()[:6] == ["describe", "create", "describe", "describe", "describe", "describe"]
  assert "WAITING_FOR_RESOURCES" in result.stderr
  assert calls[-1].startswith("compute tpus queued-resources delete practice-jax") and "--force" in calls[-1]


@pytest.mark.parametrize("queue, words", [
    ("WAITING_FOR_RESOURCES", "no v4-8 capacity in us-central2-b within --queue-timeout=1s"),
    ("WAITING_FOR_RESOURCES,FAILED", "ended in state FAILED")])
def test_tpu_queued_resource_gives_up_and_deletes_the_request(tmp_path, cloud, queue, words):
  result = cloud.run(*tpu_args("--queued", "--queue-timeout=1s", f"--log={tmp_path / 'run.log'}"),
                     FAKE_QUEUE=queue, PRACTICE_JAX_LAUNCH_POLL_S="1")
  assert result.returncode == 1 and words in result.stderr
  assert cloud.calls()[-1].startswith("compute tpus queued-resources delete")
  assert "ssh" not in cloud.verbs() and not (cloud.state / "queued").exists()


def test_tpu_spot_and_queued_in_dry_run():
  result = run_script(TPU, *tpu_args("--dry-run", "--queued", "--spot", "--delete"))
  assert result.returncode == 0, result.stderr
  create, = [c for c in commands(result.stdout) if c[:5] == ["gcloud", "compute", "tpus", "queued-resources", "create"]]
  assert "--spot" in create and "--valid-until-duration=1h" in create
  assert "until the state is ACTIVE" in result.stdout
  assert commands(result.stdout)[-1][:5] == ["gcloud", "compute", "tpus", "queued-resources", "delete"]


@pytest.mark.parametrize("args, words", [
    (["--accelerator-type=v7x-8"], "No runtime version known for --accelerator-type=v7x-8"),
    (["--accelerator-type=v4_8"], "is not a TPU type"),
    (["--queue-timeout=soon", "--queued"], "is not a duration"),
    (["--skip-create", "--spot"], "--skip-create uses an existing one"),
    (["--attach"], "--attach acts on the trainers of an earlier launch"),
])
def test_tpu_refuses_what_it_cannot_provision(args, words):
  result = run_script(TPU, *tpu_args("--dry-run", *args))
  assert result.returncode == 2 and words in result.stderr, result.stderr
  assert len(result.stderr.strip().splitlines()) == 1
  assert run_script(TPU, *tpu_args("--dry-run", "--accelerator-type=v7x-8", "--version=v2-alpha-tpu7x")).returncode == 0


def test_tpu_skip_create_reads_the_accelerator_type_of_the_vm(tmp_path, cloud):
  (cloud.state / "vm").write_text("v4-32")
  result = cloud.run("--skip-create", "--skip-setup", "--config=configs/mnist.py", "--workdir=/tmp/run",
                     f"--log={tmp_path / 'run.log'}")
  assert result.returncode == 0, result.stderr
  assert cloud.calls()[0].startswith("compute tpus tpu-vm describe practice-jax")
  assert "v4-32 has several workers" in result.stderr   # not the v4-8 default's silence
  (cloud.state / "vm").unlink()
  result = cloud.run("--skip-create", "--config=configs/mnist.py", "--workdir=/tmp/run")
  assert result.returncode == 2 and "not found" in result.stderr


# Item 8: the README's examples run as written (with --dry-run).


def readme_commands() -> list[str]:
  text = (REPO / "launch" / "README.md").read_text()
  found = []
  for block in text.split("```")[1::2]:
    for command in block.replace("\\\n", " ").splitlines():
      command = command.split("#", 1)[0].strip() if command.lstrip().startswith("#") else command.strip()
      if command.startswith(("launch/", "bash launch/", "sbatch ")):
        found.append(command)
  return found


def test_readme_examples_run_as_written_in_dry_run():
  examples = readme_commands()
  assert len(examples) >= 5
  for example in examples:
    words = shlex.split(example)
    if words[0] == "sbatch":   # sbatch's options become the dry run's shape
      script = words.index("launch/gpu_cluster.sbatch")
      words = ["bash", *words[script:script + 1], "--dry-run", *words[1:script], *words[script + 1:]]
    elif "--dry-run" not in words:
      cut = words.index("--") if "--" in words else len(words)
      words = words[:cut] + ["--dry-run"] + words[cut:]
    if words[0] == "bash":
      words = words[1:]
    script = TPU if words[0].endswith("tpu_vm.sh") else SLURM
    result = run_script(script, *words[1:])
    assert result.returncode == 0, (example, result.stderr)
    assert "error" not in result.stderr, (example, result.stderr)


def test_readme_says_what_each_failure_does_and_what_to_do():
  text = (REPO / "launch" / "README.md").read_text()
  assert "ssh-add ~/.ssh/google_compute_engine" in text
  failures = text[text.index("## When something goes wrong"):]
  for failure in ("No capacity", "Preemption", "Ctrl-C", "Lost connection", "A worker dies",
                  "time limit"):
    assert failure in failures, failure


# --- launch/gpu_cluster.sbatch --------------------------------------------------------


def sbatch_header(path) -> dict[str, str]:
  """The #SBATCH options as sbatch reads them: comment lines up to the first command."""
  options = {}
  for line in path.read_text().splitlines()[1:]:
    if line.startswith("#SBATCH"):
      key, _, value = line.split(None, 1)[1].partition("=")
      options[key] = value
    elif line.strip() and not line.startswith("#"):
      break
  return options


def test_sbatch_header():
  assert SLURM.read_text().startswith("#!/usr/bin/env bash\n#SBATCH ")
  header = sbatch_header(SLURM)
  assert header["--nodes"] == "2" and header["--ntasks-per-node"] == "1"
  assert header["--gpus-per-node"] == "8" and int(header["--cpus-per-task"]) > 0
  assert header["--time"] and "%j" in header["--output"]
  assert "sbatch --nodes=4 launch/gpu_cluster.sbatch --config=configs/shakespeare_gpt.py" \
         " --workdir=/shared/runs/gpt" in SLURM.read_text()


def test_sbatch_dry_run_runs_on_every_node_with_the_header_shape():
  result = run_script(SLURM, "--dry-run", "--config=configs/shakespeare_gpt.py",
                      "--workdir=/shared/runs/gpt", "--venv=/shared/venv", "--tfds-data-dir=/shared/tfds",
                      "--", *PASSTHROUGH)
  assert result.returncode == 0, result.stderr
  calls = commands(result.stdout)
  srun = calls[-1]
  header = sbatch_header(SLURM)
  assert srun[:3] == ["srun", f"--nodes={header['--nodes']}", "--ntasks-per-node=1"]
  assert f"--cpus-per-task={header['--cpus-per-task']}" in srun
  main = srun.index("practice_jax.main")
  assert srun[main - 2:main] == ["python", "-m"]
  assert srun[main + 1:] == ["--config=configs/shakespeare_gpt.py", "--workdir=/shared/runs/gpt",
                             *PASSTHROUGH]
  assert not any("coordinator" in word for word in srun)   # JAX finds it from SLURM
  assert ["source", "/shared/venv/bin/activate"] in calls
  assert ["export", "TFDS_DATA_DIR=/shared/tfds"] in calls
  # all 8 GPUs of each node, through jax.distributed.initialize's documented argument
  assert "local_device_ids=[0,1,2,3,4,5,6,7]" in result.stdout
  assert "JAX_LOCAL_DEVICE_IDS" not in result.stdout
  assert ["cd", str(REPO)] in calls
  assert "SLURM_JOB_NUM_NODES=2" in result.stdout
  assert "node 2 of 2: SLURM_PROCID=1" in result.stdout


def test_sbatch_dry_run_other_shape():
  result = run_script(SLURM, "--dry-run", "--nodes=4", "--gpus-per-node", "2",
                      "--config=configs/mnist.py", "--workdir=/shared/runs/m")
  assert result.returncode == 0, result.stderr
  calls = commands(result.stdout)
  assert calls[-1][:3] == ["srun", "--nodes=4", "--ntasks-per-node=1"]
  assert "local_device_ids=[0,1]" in result.stdout
  assert "node 4 of 4: SLURM_PROCID=3" in result.stdout


FAKE_SRUN = """#!/usr/bin/env bash
printf 'srun-args:'; printf ' [%s]' "$@"; echo
echo "env: JAX_LOCAL_DEVICE_IDS=${JAX_LOCAL_DEVICE_IDS:-} TFDS_DATA_DIR=${TFDS_DATA_DIR:-}" \
  "VIRTUAL_ENV=${VIRTUAL_ENV:-} PWD=$PWD"
"""


def test_sbatch_inside_a_job_runs_srun(tmp_path):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  write_executable(bin_dir / "srun", FAKE_SRUN)
  venv = tmp_path / "venv"
  (venv / "bin").mkdir(parents=True)
  (venv / "bin" / "activate").write_text(f'export VIRTUAL_ENV="{venv}"\n')
  env = {"SLURM_JOB_ID": "42", "SLURM_JOB_NUM_NODES": "3", "SLURM_GPUS_PER_NODE": "h100:4",
         "SLURM_CPUS_PER_TASK": "16", "SLURM_SUBMIT_DIR": str(REPO), "SLURM_JOB_NODELIST": "gpu[1-3]"}
  result = run_script(SLURM, "--config=configs/mnist.py", "--workdir=/shared/runs/m", f"--venv={venv}",
                      "--tfds-data-dir=/shared/tfds", "--", "--config.num_epochs=1", env=env,
                      path_prefix=bin_dir)
  assert result.returncode == 0, result.stderr
  assert ("srun-args: [--nodes=3] [--ntasks-per-node=1] [--cpus-per-task=16] [--kill-on-bad-exit=1]"
          " [python] [-m] [practice_jax.main] [--config=configs/mnist.py] [--workdir=/shared/runs/m]"
          " [--config.num_epochs=1]") in result.stdout
  assert (f"env: JAX_LOCAL_DEVICE_IDS= TFDS_DATA_DIR=/shared/tfds VIRTUAL_ENV={venv}"
          f" PWD={REPO}") in result.stdout   # practice_jax passes local_device_ids itself
  assert "4 GPUs each" in result.stdout


def test_sbatch_refuses_a_job_without_a_gpu_count(tmp_path):
  """Without SLURM_GPUS_ON_NODE / SLURM_GPUS_PER_NODE, JAX would use GPU 0 of every node."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  write_executable(bin_dir / "srun", FAKE_SRUN)
  env = {"SLURM_JOB_ID": "42", "SLURM_JOB_NUM_NODES": "2", "SLURM_SUBMIT_DIR": str(REPO)}
  result = run_script(SLURM, "--config=configs/mnist.py", "--workdir=/shared/runs/m", env=env,
                      path_prefix=bin_dir)
  assert result.returncode == 2 and "srun-args" not in result.stdout
  assert len(result.stderr.strip().splitlines()) == 1
  assert "no GPU count" in result.stderr and "sbatch --gpus-per-node=G" in result.stderr


@pytest.mark.parametrize("args, env, words", [
    (["--workdir=/w"], {}, "Missing --config"),
    (["--config=configs/mnist.py"], {}, "Missing --workdir"),
    (["--config=configs/mnist.py", "--workdir=/w"], {}, "Not inside a SLURM job"),
    (["--config=configs/nope.py", "--workdir=/w", "--dry-run"], {}, "configs/nope.py not found"),
    (["--config=configs/mnist.py", "--workdir=/w", "--nodes=4"], {"SLURM_JOB_ID": "1"},
     "put them before the script's name"),
    (["--config=configs/mnist.py", "--workdir=/w", "--dry-run", "--nodes=0"], {}, "not a positive"),
    (["--config=configs/mnist.py", "--workdir=/w", "--venv=/nonexistent"],
     {"SLURM_JOB_ID": "1", "SLURM_SUBMIT_DIR": str(REPO)}, "not a virtual environment"),
    (["--config=configs/mnist.py", "--workdir=/w", "--bogus"], {}, "Unknown argument --bogus"),
])
def test_sbatch_bad_arguments_exit_2_with_one_sentence(args, env, words):
  result = run_script(SLURM, *args, env=env)
  assert result.returncode == 2
  assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_sbatch_help():
  result = run_script(SLURM, "-h")
  assert result.returncode == 0 and "Usage: sbatch" in result.stdout


# --- both -----------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
@pytest.mark.parametrize("script", [TPU, SLURM], ids=lambda p: p.name)
def test_shellcheck_clean(script):
  result = subprocess.run(["shellcheck", "--shell=bash", "--severity=style", str(script)],
                          capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stdout
