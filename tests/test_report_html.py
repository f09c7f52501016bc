"""`practice report`: the ledger as one self-contained HTML page, checked with Python's
HTML parser (every tag closed, one table row per attempt, every picture a real PNG, text
escaped) and, where a Chromium is installed, in a real headless browser."""

from __future__ import annotations

import base64
import html.parser
import json
import os
import shutil
import subprocess

import matplotlib
import pytest

matplotlib.use("Agg")

from conftest import load_config  # noqa: E402
from practice_jax.ledger import Ledger  # noqa: E402
from test_practice import cli, diverging, healthy, overfitting, plateau  # noqa: E402

VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source", "wbr", "area",
        "base", "embed", "param", "track"}
NOTE = 'dropout <0.0> & "no" regularisation'


class Page(html.parser.HTMLParser):
  """Checks nesting as it parses; collects table rows, images and text."""

  def __init__(self):
    super().__init__(convert_charrefs=True)
    self.stack, self.errors, self.images, self.text = [], [], [], []
    self.tables: list[dict] = []      # {"class": ..., "rows": [[cell text]], "header": []}
    self._cell = None

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    if tag == "img":
      self.images.append(attrs)
    if tag in VOID:
      return
    self.stack.append(tag)
    if tag == "table":
      self.tables.append({"class": attrs.get("class", ""), "rows": [], "header": [],
                          "in_body": False})
    elif tag == "tbody":
      self.tables[-1]["in_body"] = True
    elif tag == "tr" and self.tables and self.tables[-1]["in_body"]:
      self.tables[-1]["rows"].append([])
    elif tag in ("td", "th"):
      self._cell = []

  def handle_endtag(self, tag):
    if tag in VOID:
      return
    if not self.stack or self.stack[-1] != tag:
      self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
      return
    self.stack.pop()
    if tag in ("td", "th") and self.tables:
      text, table = "".join(self._cell or []).strip(), self.tables[-1]
      if table["in_body"] and table["rows"]:
        table["rows"][-1].append(text)
      elif tag == "th":
        table["header"].append(text)
      self._cell = None

  def handle_data(self, data):
    self.text.append(data)
    if self._cell is not None:
      self._cell.append(data)


def parse(path) -> Page:
  page = Page()
  with open(path, encoding="utf-8") as f:
    page.feed(f.read())
  page.close()
  assert not page.errors, page.errors[:5]
  assert page.stack == [], f"unclosed: {page.stack}"
  return page


@pytest.fixture(scope="module")
def ledger_path(tmp_path_factory):
  """A ledger of four attempts at mnist_mlp (healthy, over-fitting, plateau, diverged),
  the healthy one with a learning_curves.png and an inspect picture in its workdir."""
  import matplotlib.pyplot as plt
  root = tmp_path_factory.mktemp("report")
  config = json.loads(json.dumps(load_config("mnist_mlp").to_dict(), default=str))
  a = healthy(config, root / "runs" / "mnist_mlp")
  b = overfitting(config, root / "runs" / "dropout0", started_offset=100,
                  model__dropout=0.0, num_epochs=6.0)
  c = plateau(config, root / "runs" / "flat", started_offset=200)
  d = diverging(config, root / "runs" / "lr0.3", started_offset=300)
  for path in (os.path.join(a, "learning_curves.png"),
               os.path.join(a, "inside", "errors.png")):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    fig.savefig(path)
    plt.close(fig)
  path = root / "ledger.sqlite"
  cli(path, "import", str(a), str(b), str(c), str(d))
  cli(path, "note", "2", NOTE)
  return path


def test_the_page_is_well_formed_with_one_row_per_attempt_and_real_pngs(ledger_path,
                                                                         tmp_path):
  out = tmp_path / "page.html"
  said = cli(ledger_path, "--out", str(out), "report")
  assert f"Report of 4 attempts written to {out}" in said
  page = parse(out)
  attempts = [t for t in page.tables if "attempts" in t["class"]]
  assert len(attempts) == 1 and len(attempts[0]["rows"]) == 4
  header, rows = attempts[0]["header"], attempts[0]["rows"]
  column = {name: header.index(name) for name in ("run", "validation/accuracy", "target",
                                                   "note", "status")}
  assert [r[column["run"]] for r in rows][:3] == ["#1", "#2", "#3"]   # best first
  assert rows[-1][column["status"]] == "diverged"
  assert rows[0][column["validation/accuracy"]] == "96.50%"
  by_id = {r[column["run"]]: r for r in rows}
  assert by_id["#2"][column["note"]] == NOTE            # escaped in the file, intact here
  # The history of the experiment, and the healthy run's two pictures: all real PNGs.
  assert len(page.images) == 3
  for image in page.images:
    prefix = "data:image/png;base64,"
    assert image["src"].startswith(prefix)
    data = base64.b64decode(image["src"][len(prefix):])
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
  assert {i["alt"] for i in page.images} >= {"learning_curves.png", "inside/errors.png"}
  text = "".join(page.text)
  assert "over-fitting" in text and "plateau" in text      # the feedback of each attempt
  assert "model.dropout" in text                           # its config differences
  raw = out.read_text()
  assert NOTE not in raw and html.escape(NOTE) in raw
  assert "http://" not in raw and "https://" not in raw and "<link" not in raw


def test_one_experiment_default_place_and_a_deleted_workdir(ledger_path, tmp_path):
  copy = tmp_path / "ledger.sqlite"
  shutil.copy(ledger_path, copy)
  assert "report_mnist_mlp.html" in cli(copy, "report", "mnist_mlp")
  out = tmp_path / "practice" / "report_mnist_mlp.html"
  page = parse(out)
  assert len(next(t for t in page.tables if "attempts" in t["class"])["rows"]) == 4
  with pytest.raises(Exception, match="No attempts of 'nope'"):
    cli(copy, "report", "nope")
  with Ledger(str(copy)) as ledger:                  # point one attempt at a gone workdir
    ledger._db.execute("UPDATE runs SET workdir = '/nonexistent/run' WHERE id = 3")
    healthy_workdir = ledger.get(1).workdir        # and a later one at #1's workdir
    ledger._db.execute("UPDATE runs SET workdir = ? WHERE id = 2", (healthy_workdir,))
  cli(copy, "--out", str(tmp_path / "again.html"), "report")
  page = parse(tmp_path / "again.html")
  text = "".join(page.text)
  assert "The workdir is gone" in text
  assert "Its workdir now holds a later attempt (#2)" in text     # #1's pictures are #2's
  assert [i["alt"] for i in page.images].count("learning_curves.png") == 1   # with #2 only


def _browser() -> str | None:
  for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
    if shutil.which(name):
      return shutil.which(name)
  return None


@pytest.mark.skipif(_browser() is None, reason="no Chromium installed (the page is "
                    "still checked with html.parser above)")
def test_the_page_renders_and_runs_its_script_in_a_headless_browser(ledger_path, tmp_path):
  out = tmp_path / "page.html"
  cli(ledger_path, "--out", str(out), "report")
  result = subprocess.run(
      [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
       out.resolve().as_uri()], capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  dom = result.stdout
  assert 'data-ready="yes"' in dom            # the sorting script ran without an error
  assert dom.count('<tr id="run-') == 4
