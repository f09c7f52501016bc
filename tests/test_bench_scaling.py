"""bench/scaling.py (issue #21, how cost grows): its plan of points, the width rule, its
refusals, its PNG, and a `--quick` run end to end (a worker process per simulated device
count). Nothing here asserts a speed: only what XLA computes (FLOPs, memory), which does
not depend on the machine's load."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


def _bench():
  spec = importlib.util.spec_from_file_location("bench_scaling", REPO / "bench" / "scaling.py")
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module          # dataclasses look their module up there
  spec.loader.exec_module(module)
  return module


scaling = _bench()
Point = scaling.Point


def test_plan_measures_each_point_once_and_keeps_every_sweep():
  points, members = scaling.plan(["cnn", "gpt"], scaling.FULL, {"cnn": 128, "gpt": 12})
  assert len(points) == len(set(points))
  cnn = members["cnn"]
  assert [p.batch for s, p in cnn if s == "batch"] == [16, 32, 64, 128, 256, 512]
  assert [p.width for s, p in cnn if s == "width"] == [0.5, 1.0, 2.0, 4.0]
  assert [(p.batch, p.devices) for s, p in cnn if s == "weak"] == [
      (32, 1), (64, 2), (128, 4), (256, 8)]
  assert [(p.batch, p.devices) for s, p in cnn if s == "strong"] == [
      (128, 1), (128, 2), (128, 4), (128, 8)]
  # The batch sweep's 128 is also the width sweep's 1x and strong scaling's 1 device.
  shared = Point("cnn", 128, 1.0, 1)
  assert {s for s, p in cnn if p == shared} == {"batch", "width", "strong"}
  assert sum(p == shared for p in points) == 1
  assert {p.batch for s, p in members["gpt"] if s == "width"} == {12}


def test_width_scales_only_the_width_settings():
  cnn = scaling.point_config(scaling.CONFIGS["cnn"], Point("cnn", 64, 2.0, 1))
  assert cnn.batch_size == 64
  assert tuple(cnn.model.features) == (64, 128) and tuple(cnn.model.dense) == (512,)
  assert tuple(cnn.model.pools) == ("avg", "avg")
  gpt = scaling.point_config(scaling.CONFIGS["gpt"], Point("gpt", 8, 0.5, 1))
  assert (gpt.model.embed_dim, gpt.model.num_heads, gpt.model.num_layers) == (64, 4, 4)
  assert gpt.data.block_size == 64


def test_bad_arguments_get_one_sentence_and_nothing_runs(tmp_path, capsys):
  out = tmp_path / "out"
  # Strong scaling's global batch 128 does not split over 3 devices.
  assert scaling.main(["--models", "cnn", "--devices", "1,3", "--out", str(out)]) == 2
  message = capsys.readouterr().err.strip()
  assert "does not split over 3 devices" in message and len(message.splitlines()) == 1
  assert scaling.main(["--models", "cnn,resnet", "--out", str(out)]) == 2
  assert "choose from cnn, gpt" in capsys.readouterr().err
  assert scaling.main(["--quick", "--models", "gpt", "--devices", "0", "--out", str(out)]) == 2
  assert scaling.main(["--rounds", "0", "--quick", "--out", str(out)]) == 2
  assert "--rounds=0" in capsys.readouterr().err
  assert not out.exists()


def _fake_result() -> tuple[dict, dict]:
  points, members = scaling.plan(["cnn", "gpt"], scaling.FULL, {"cnn": 128, "gpt": 12})
  rows = []
  for p in points:
    flops = 1e9 * p.batch * p.width ** 2
    memory = {"argument": int(1e6 * p.width ** 2), "output": int(1e6 * p.width ** 2),
              "alias": int(1e6 * p.width ** 2), "temp": int(1e5 * p.batch / p.devices),
              "generated_code": 0}
    memory["peak"] = memory["argument"] + memory["temp"]
    rate = 100 / (p.batch * p.width ** 2) ** 0.5
    rows.append({**scaling.dataclasses.asdict(p), "per_device_batch": p.batch // p.devices,
                 "params": 1000, "flops": flops, "memory": memory, "steps_per_s": rate,
                 "examples_per_s": rate * p.batch, "gflops_per_s": rate * flops / 1e9})
  result = {"points": rows, "matmul_gflops": [300.0], "load_average": [[2.0, 2.0, 2.0]],
            "machine": "test", "cpus": 2, "rounds": 1,
            "sweeps": {m: [[s, scaling.dataclasses.asdict(p)] for s, p in pairs]
                       for m, pairs in members.items()}}
  return result, members


def test_plot_draws_every_panel_from_a_result(tmp_path):
  result, members = _fake_result()
  assert scaling.members_of(json.loads(json.dumps(result))) == members
  path = tmp_path / "scaling.png"
  scaling.plot(result, members, str(path))
  assert path.read_bytes()[:8] == PNG
  table = scaling.table(scaling.rows_of(result, members, "cnn", "width"), "cnn, width")
  assert table.count("\n| 1 | 128 (128) |") == 4


def test_quick_run_measures_and_writes_json_table_and_png(tmp_path):
  out = tmp_path / "results"
  proc = subprocess.run([sys.executable, str(REPO / "bench" / "scaling.py"), "--quick",
                         "--models", "cnn", "--out", str(out)],
                        capture_output=True, text=True, cwd=REPO, timeout=600)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  result = json.loads((out / "scaling.json").read_text())
  points = {(p["batch"], p["devices"]): p for p in result["points"]}
  assert set(points) == {(8, 1), (8, 2)}
  one, two = points[8, 1], points[8, 2]
  for p in (one, two):
    assert len(p["round_seconds"]) == result["rounds"] and p["steps_per_s"] > 0
    assert abs(p["examples_per_s"] - 8 * p["steps_per_s"]) < 1e-6 * p["examples_per_s"]
    assert p["memory"]["peak"] > p["memory"]["temp"] > 0
  # The FLOPs are the whole step's, however it is split; each of 2 devices holds the
  # same (replicated) state but only its half of the batch: 8 images of 28x28 uint8
  # and their int32 labels in all.
  assert one["flops"] == two["flops"] > 0
  assert two["per_device_batch"] == 4
  assert 0 < one["memory"]["argument"] - two["memory"]["argument"] <= 8 * (28 * 28 + 4)
  assert sorted(result["max_rss_bytes"]) == ["1", "2"]
  assert (out / "scaling.png").read_bytes()[:8] == PNG
  assert "| 2 | 8 (4) | 1x |" in (out / "scaling.md").read_text()
