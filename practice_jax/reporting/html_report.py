"""The ledger as one static HTML page (python -m practice_jax.practice report).

One self-contained file that opens from the file system with no server and no network:
the CSS and the little JavaScript that sorts the tables are inline, and every picture is
a PNG embedded as a base64 data URI. For each experiment:

- a table of its attempts, best first (click a column header to sort by it; numbers sort
  as numbers), with the final metrics, wall time, target pass/fail, what changed from
  the config file and the note;
- the personal-best history (the PNG of `practice history`);
- per attempt, folded: the feedback `practice feedback` gives, the config differences,
  and the PNGs its workdir still holds (learning curves, confusion matrices, robustness,
  and the pictures `python -m practice_jax.inspect` wrote there).

All text from the ledger (notes, config values, paths) is escaped.
"""

from __future__ import annotations

import base64
import datetime
import glob
import html
import math
import os
import tempfile

# The PNGs of a workdir shown with its attempt, in this order (inspect's after them).
RUN_PICTURES = ("learning_curves.png", "validation_confusion_matrix.png",
                "test_confusion_matrix.png", "robustness.png")
INSIDE_GLOB = "inside/*.png"
MAX_PICTURE_BYTES = 4 << 20       # larger PNGs are linked, not embedded

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em auto;
max-width:1400px;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.25em;border-bottom:1px solid #ccc;padding-bottom:.2em;
margin-top:2em}h3{font-size:1.05em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3;cursor:pointer;user-select:none;white-space:nowrap}
th.asc::after{content:" \\25B2"}th.desc::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr:nth-child(even) td{background:#fafafa}
.pass{color:#176f2c;font-weight:600}.fail{color:#b00020;font-weight:600}
.muted{color:#777}img{max-width:100%;border:1px solid #eee;margin:.3em 0}
details{margin:.4em 0;border:1px solid #e4e4e4;border-radius:4px;padding:.3em .6em}
summary{cursor:pointer;font-weight:600}pre{white-space:pre-wrap;font-size:.85em;
background:#f7f7f7;padding:.5em;border-radius:3px}
.pictures{display:flex;flex-wrap:wrap;gap:.8em}.pictures figure{margin:0;max-width:48%}
figcaption{font-size:.8em;color:#555}
"""

# Sorting: a click on a header sorts that table's body by the column, numbers (data-sort
# when a cell has it) before text; a second click reverses. Missing values sort last.
_JS = """
document.querySelectorAll('table.sortable').forEach(function(table){
  table.querySelectorAll('th').forEach(function(th, col){
    th.addEventListener('click', function(){
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var asc = !th.classList.contains('asc');
      table.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc');});
      th.classList.add(asc ? 'asc' : 'desc');
      function key(row){
        var cell = row.cells[col], v = cell.getAttribute('data-sort');
        if (v === null) v = cell.textContent.trim();
        var n = parseFloat(v);
        return (v !== '' && !isNaN(n) && isFinite(v)) ? [0, n] : [v === '' ? 2 : 1, v];
      }
      rows.sort(function(a, b){
        var x = key(a), y = key(b);
        if (x[0] !== y[0]) return x[0] - y[0];
        var c = x[0] === 0 ? x[1] - y[1] : String(x[1]).localeCompare(String(y[1]));
        return asc ? c : -c;
      });
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
document.body.setAttribute('data-ready', 'yes');
"""


def esc(value) -> str:
  return html.escape("" if value is None else str(value), quote=True)


def png_data_uri(path: str) -> str | None:
  """The PNG at `path` as a data: URI, or None if it is missing, not a PNG or too big."""
  try:
    if os.path.getsize(path) > MAX_PICTURE_BYTES:
      return None
    with open(path, "rb") as f:
      data = f.read()
  except OSError:
    return None
  if not data.startswith(b"\x89PNG\r\n\x1a\n"):
    return None
  return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _figure(path: str, caption: str) -> str:
  uri = png_data_uri(path)
  if uri is None:
    if not os.path.isfile(path):
      return ""
    return (f'<figure><a href="{esc("file://" + os.path.abspath(path))}">{esc(caption)}'
            f'</a><figcaption>too large to embed</figcaption></figure>')
  return (f'<figure><img src="{uri}" alt="{esc(caption)}">'
          f'<figcaption>{esc(caption)}</figcaption></figure>')


def _cell(text: str, sort_value=None, cls: str = "") -> str:
  attrs = ""
  if sort_value is not None and not (isinstance(sort_value, float)
                                     and not math.isfinite(sort_value)):
    attrs += f' data-sort="{esc(sort_value)}"'
  if cls:
    attrs += f' class="{cls}"'
  return f"<td{attrs}>{esc(text)}</td>"


def _target_cell(practice, run) -> str:
  text = practice.target_text(run)
  cls = "pass" if text.startswith("pass") else "fail" if text == "FAIL" else "muted"
  return _cell(text, None, cls)


def _attempts_table(practice, attempts) -> str:
  first = attempts[0]
  monitored = first.monitored_metric or "?"
  keys = [monitored] + sorted({f"{ev}/{m}" for r in attempts for ev, ms in r.final.items()
                               for m in ms} - {monitored})
  header = (["rank", "run", "started (UTC)", "status"] + keys +
            [f"best {monitored}", "time", "steps", "target", "changed", "note", "workdir"])
  rows = []
  for rank, r in enumerate(attempts, 1):
    when = (r.started or r.recorded or "")[:16].replace("T", " ")
    cells = [_cell(str(rank), rank, "num"), _cell(r.label, r.id if r.id is not None else ""),
             _cell(when), _cell(r.status)]
    for key in keys:
      value = r.final_value(key)
      cells.append(_cell(practice.fmt(r, key, value), value, "num"))
    best = r.best_value()
    cells += [_cell(practice.fmt(r, monitored, best), best, "num"),
              _cell(practice.fmt_time(r.wall_time_s), r.wall_time_s, "num"),
              _cell(str(r.steps or "-"), r.steps, "num"), _target_cell(practice, r),
              _cell(practice.changes(r, limit=8) or "-"), _cell(r.note or ""),
              _cell(r.workdir)]
    rows.append(f'<tr id="run-{esc(r.id)}">' + "".join(cells) + "</tr>")
  return ('<table class="sortable attempts"><thead><tr>' +
          "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead><tbody>\n" +
          "\n".join(rows) + "\n</tbody></table>")


def _history_picture(practice, experiment: str, runs, folder: str) -> str:
  from practice_jax.reporting import practice_plots
  points = practice.history_points(runs)
  key = runs[0].monitored_metric or "?"
  target = next((t for r in reversed(runs) for t in practice._parsed_targets(r.target)
                 if t.key == key), None)
  path = os.path.join(folder, "history.png")
  if not practice_plots.history(points, path, key, percent=runs[0].percent(key),
                                higher_is_better=runs[0].higher_is_better(),
                                title=f"{experiment}: personal best of {key}",
                                target=target.value if target else None):
    return ""
  return f'<div class="pictures">{_figure(path, f"{experiment}: history")}</div>'


def _run_details(practice, ledger, run, latest_label: str) -> str:
  """`latest_label`: the ledger's latest attempt in the same workdir (its files are
  that attempt's)."""
  parts = [f'<details id="details-{esc(run.id)}"><summary>{esc(run.label)} '
           f'{esc(run.status)}' + (f" &mdash; {esc(run.note)}" if run.note else "") +
           "</summary>"]
  facts = [("workdir", run.workdir), ("config file", run.config_file),
           ("code", run.code_version), ("seed", run.seed),
           ("machine", ", ".join(f"{k} {v}" for k, v in (run.machine or {}).items()
                                 if v is not None)),
           ("started", run.started), ("finished", run.finished)]
  parts.append("<table><tbody>" + "".join(
      f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts
      if v not in (None, "")) + "</tbody></table>")
  try:
    feedback = practice.cmd_feedback(run, ledger)
  except Exception as e:  # noqa: BLE001 - one odd run must not lose the whole page
    feedback = f"(no feedback: {type(e).__name__}: {e})"
  parts.append(f"<h4>Feedback</h4><pre>{esc(feedback)}</pre>")
  diff = {k: v for k, v in run.config_diff.items() if k not in practice._WHERE_KEYS}
  if diff:
    parts.append("<h4>Changed from the config file</h4><table><thead><tr><th>key</th>"
                 "<th>config file</th><th>this run</th></tr></thead><tbody>" + "".join(
                     f"<tr><td>{esc(k)}</td><td>{esc(practice.fmt_value(a))}</td>"
                     f"<td>{esc(practice.fmt_value(b))}</td></tr>"
                     for k, (a, b) in diff.items()) + "</tbody></table>")
  if latest_label != run.label:
    parts.append(f'<p class="muted">Its workdir now holds a later attempt '
                 f'({esc(latest_label)}): the pictures there are that one\'s.</p>'
                 "</details>")
    return "\n".join(parts)
  pictures = [os.path.join(run.workdir, name) for name in RUN_PICTURES]
  pictures += sorted(glob.glob(os.path.join(glob.escape(run.workdir), INSIDE_GLOB)))
  figures = [_figure(p, os.path.relpath(p, run.workdir)) for p in pictures]
  figures = [f for f in figures if f]
  if figures:
    parts.append('<div class="pictures">' + "".join(figures) + "</div>")
  elif not os.path.isdir(run.workdir):
    parts.append('<p class="muted">The workdir is gone; the ledger keeps the numbers.</p>')
  parts.append("</details>")
  return "\n".join(parts)


def render(ledger, experiment: str | None = None) -> str:
  """The page for `ledger` (a ledger.Ledger), all experiments or one."""
  from practice_jax import practice
  runs = ledger.runs(experiment)
  now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  body = [f"<h1>Practice ledger{' of ' + esc(experiment) if experiment else ''}</h1>",
          f'<p class="muted">{esc(ledger.path)} &middot; {len(runs)} attempt'
          f'{"s" * (len(runs) != 1)} &middot; written {esc(now)}</p>']
  names = sorted({r.experiment for r in runs})
  if not runs:
    body.append("<p>No attempts recorded yet.</p>")
  if len(names) > 1:
    body.append("<ul>" + "".join(f'<li><a href="#exp-{esc(n)}">{esc(n)}</a></li>'
                                 for n in names) + "</ul>")
  latest = {}                       # workdir -> its latest attempt's label (runs: oldest first)
  for r in ledger.runs():
    latest[r.workdir] = r.label
  with tempfile.TemporaryDirectory() as folder:
    for name in names:
      attempts = [r for r in runs if r.experiment == name]      # oldest first
      best_first = practice.ranked(attempts)
      first = best_first[0]
      target = next((r.target for r in attempts if r.target), "")
      body.append(
          f'<h2 id="exp-{esc(name)}">{esc(name)}</h2><p>{len(attempts)} attempt'
          f'{"s" * (len(attempts) != 1)}, best first by {esc(first.monitored_metric)} '
          f'({"higher" if first.higher_is_better() else "lower"} is better)'
          + (f"; target {esc(target)}" if target else "") + "</p>")
      body.append(_attempts_table(practice, best_first))
      sub = os.path.join(folder, f"{len(body)}")
      os.makedirs(sub)
      body.append(_history_picture(practice, name, attempts, sub))
      body.append("<h3>Attempts</h3>")
      body += [_run_details(practice, ledger, r, latest[r.workdir])
               for r in reversed(attempts)]
  return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
          f"<title>{esc('Practice ledger' + (': ' + experiment if experiment else ''))}"
          f"</title><style>{_CSS}</style></head><body>\n" + "\n".join(body) +
          f"\n<script>{_JS}</script>\n</body></html>\n")


def write(ledger, path: str, experiment: str | None = None) -> str:
  """Writes the page to `path` (atomically); returns the path."""
  page = render(ledger, experiment)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(page)
  os.replace(tmp, path)
  return path
