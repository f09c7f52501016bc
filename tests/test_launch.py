"""launch/: the TPU VM and SLURM scripts, run with --dry-run or against fake gcloud/srun
(no network, no cloud, no cluster; a second each)."""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess

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


def run_script(script, *args, env=None, path_prefix=None):
  full_env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
  full_env.pop("JAX_LOCAL_DEVICE_IDS", None)
  if path_prefix is not None:
    full_env["PATH"] = f"{path_prefix}{os.pathsep}{full_env['PATH']}"
  full_env.update(env or {})
  return subprocess.run([BASH, str(script), *map(str, args)], cwd=REPO, env=full_env,
                        capture_output=True, text=True, timeout=60)


def commands(stdout: str) -> list[list[str]]:
  """The '+ ' lines of a dry run, split as a shell would (so they must be well quoted)."""
  return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


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
  assert any(c[:3] == ["git", "-C", str(REPO)] and "archive" in c and c[-1] == "HEAD" for c in calls)
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
  assert run[:3] == ["cd", "practice_jax", "&&"]
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


FAKE_GCLOUD = """#!/usr/bin/env bash
printf '%s\\n' "$*" >> "$FAKE_LOG"
if [[ -n ${FAKE_FAIL:-} && "$*" == *"$FAKE_FAIL"* ]]; then echo "fake failure" >&2; exit 7; fi
if [[ "$*" == *practice_jax.main* ]]; then echo "worker says: step 100"; fi
"""


@pytest.fixture
def fake_gcloud(tmp_path):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  write_executable(bin_dir / "gcloud", FAKE_GCLOUD)
  return bin_dir


def test_tpu_real_run_streams_logs_and_cleans_up(tmp_path, fake_gcloud):
  log = tmp_path / "logs" / "run.log"
  env = {"FAKE_LOG": str(tmp_path / "calls"), "TMPDIR": str(tmp_path)}
  result = run_script(TPU, *tpu_args("--delete", f"--log={log}", "--", *PASSTHROUGH), env=env,
                      path_prefix=fake_gcloud)
  assert result.returncode == 0, result.stderr
  calls = (tmp_path / "calls").read_text().splitlines()
  assert [c.split()[3] for c in calls] == ["create", "ssh", "scp", "ssh", "ssh", "ssh", "delete"]
  assert "worker says: step 100" in result.stdout and "worker says: step 100" in log.read_text()
  assert not list(tmp_path.glob("*.tar.gz"))   # the tarball is removed


def test_tpu_failure_still_deletes_the_vm(tmp_path, fake_gcloud):
  env = {"FAKE_LOG": str(tmp_path / "calls"), "FAKE_FAIL": "practice_jax.main", "TMPDIR": str(tmp_path)}
  result = run_script(TPU, *tpu_args("--delete", f"--log={tmp_path / 'run.log'}"), env=env,
                      path_prefix=fake_gcloud)
  assert result.returncode == 7
  verbs = [c.split()[3] for c in (tmp_path / "calls").read_text().splitlines()]
  assert verbs[-1] == "delete" and verbs.count("delete") == 1


def test_tpu_failed_create_deletes_nothing(tmp_path, fake_gcloud):
  env = {"FAKE_LOG": str(tmp_path / "calls"), "FAKE_FAIL": "create", "TMPDIR": str(tmp_path)}
  result = run_script(TPU, *tpu_args("--delete", f"--log={tmp_path / 'run.log'}"), env=env,
                      path_prefix=fake_gcloud)
  assert result.returncode == 7
  verbs = [c.split()[3] for c in (tmp_path / "calls").read_text().splitlines()]
  assert verbs == ["create"]   # the name may belong to someone else's VM


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
