"""The leaderboard as a static web site: ``index.html`` and one page per dataset.

Each page is self-contained (styles and scripts inline, figures as relative links to the
PNGs beside it) so it works offline and from ``file://``. Tables sort by any column and
filter by method, backbone, training size, split and target, through List.js (vendored in
``uqbench/site_assets``, MIT). Every number comes from the records read, and each page lists
them (run id, commit, threads) so any figure can be traced and re-run.
"""

from __future__ import annotations

import html
import json
from importlib.resources import files
from pathlib import Path

import pandas as pd
import yaml

from uqbench.metrics.table import ARROWS, DIRECTION_WORDS, TARGET_UNITS
from uqbench.report.figures import method_colour, method_parts
from uqbench.results import output_path, write_text_atomic

FILTER_COLUMNS = ("method", "backbone", "train_size", "split", "target")

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;
max-width:1250px;padding:0 16px 40px;color:#222;line-height:1.45}
h1{margin-top:24px}h2{margin-top:32px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;width:100%}
th,td{padding:4px 6px;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}
th{background:#f6f6f6;position:sticky;top:0;cursor:pointer;vertical-align:bottom}
th small{font-weight:normal;color:#666}
td.text,th.text{text-align:left}
th.asc::after{content:" ▲"}th.desc::after{content:" ▼"}
tr.collapsed td{background:#fde8e8}tr.collapsed td.status{color:#b00;font-weight:bold}
td.nan{color:#b00}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px}
.filters{display:flex;flex-wrap:wrap;gap:8px;margin:8px 0;align-items:center}
.filters select,.filters input{font-size:13px;padding:2px 4px}
figure{margin:16px 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:13px;color:#555}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px;margin:10px 0}
.card dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px;font-size:13px}
.card dt{color:#555}.note{color:#555;font-size:14px}
.scroll{overflow-x:auto;max-height:640px;overflow-y:auto}
"""

SCRIPT = """
function numeric(v){if(v===undefined||v===null||v==='')return NaN;return parseFloat(v);}
function byValue(a,b,options){
  var x=a.values()[options.valueName],y=b.values()[options.valueName];
  var nx=numeric(x),ny=numeric(y);
  if(!isNaN(nx)||!isNaN(ny)){
    if(isNaN(nx))return 1; if(isNaN(ny))return -1;  // missing values last
    return nx-ny;}
  return String(x).localeCompare(String(y));}
function setup(id,names){
  var list=new List(id,{valueNames:names,sortFunction:byValue});
  var root=document.getElementById(id);
  var selects=root.querySelectorAll('select[data-col]');
  function apply(){
    var want={};selects.forEach(function(s){if(s.value)want[s.dataset.col]=s.value;});
    list.filter(function(item){var v=item.values();
      for(var k in want){if(String(v[k])!==want[k])return false;}return true;});
    root.querySelector('.shown').textContent=list.matchingItems.length;}
  selects.forEach(function(s){s.addEventListener('change',apply);});
  // rows arrive ranked by the server; mark the column they are ranked by
  apply();
  var ranked=root.querySelector('th[data-ranked]');if(ranked){ranked.classList.add('asc');}
  return list;}
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _script_assets() -> str:
    return (files("uqbench") / "site_assets" / "list.min.js").read_text(encoding="utf-8")


def _page(title: str, body: str, tables: list[tuple[str, list]]) -> str:
    init = "".join(f"setup({json.dumps(tid)},{json.dumps(names)});" for tid, names in tables)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>{body}"
            f"<script>{_script_assets()}</script><script>{SCRIPT}"
            f"document.addEventListener('DOMContentLoaded',function(){{{init}}});"
            "</script></body></html>\n")


def _metric_specs(records: list[dict]) -> dict:
    """Label, unit, direction of each metric: the records' own word, else the registry's."""
    from uqbench.metrics.table import metric_info

    info = metric_info()
    for r in records:
        info.update(r.get("metric_info") or {})
    return info


def summary_rows(frame: pd.DataFrame, specs: dict) -> tuple[pd.DataFrame, list[str]]:
    """One row per configuration x training size x split x target, with mean, sd and NaN
    count over seeds of every scored metric with a direction, and the run costs."""
    from uqbench.report.tables import ROW_KEYS, seed_stats, table_metrics

    keys = ROW_KEYS + ["split", "target"]
    metrics = [m for m in table_metrics(frame) if m in specs]
    scored = frame[frame["metric"].isin(metrics)]
    stats = seed_stats(scored.groupby(keys + ["metric"], sort=True)["value"]).reset_index()
    rows = []
    for key, part in stats.groupby(keys, sort=True):
        row = dict(zip(keys, key, strict=True))
        for _, r in part.iterrows():
            row[r["metric"]] = (r["mean"], r["std"], int(r["count"] - r["n_finite"]))
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table, metrics
    runs = frame.drop_duplicates("run_id")
    cost = runs.groupby(ROW_KEYS).agg(
        seeds=("seed", "nunique"), fit_s=("fit_s", "mean"),
        predict_ms=("predict_s_per_structure", lambda v: 1e3 * v.mean()),
        collapsed=("collapsed", lambda v: int(v.fillna(False).astype(bool).sum())))
    table = table.join(cost, on=ROW_KEYS)
    return table, metrics


def _cell(value, cls: str) -> str:
    if not isinstance(value, tuple):
        return f'<td class="{cls}"></td>'
    mean, std, n_nan = value
    if pd.isna(mean):
        return f'<td class="{cls} nan" data-v="">NaN ({n_nan} seed(s))</td>'
    text = f"{mean:.4g}" + ("" if pd.isna(std) else f" ± {std:.2g}")
    return f'<td class="{cls}" data-v="{mean:.10g}">{_e(text)}</td>'


def results_table(table: pd.DataFrame, metrics: list[str], specs: dict, tid: str
                  ) -> tuple[str, list]:
    """The sortable, filterable table of one dataset; returns (html, List.js names)."""
    heads = ['<th class="sort text" data-sort="method">method</th>',
             '<th class="sort text" data-sort="backbone">backbone</th>',
             '<th class="sort" data-sort="train_size">train size</th>',
             '<th class="sort text" data-sort="split">split</th>',
             '<th class="sort text" data-sort="target">target</th>',
             '<th class="sort" data-sort="seeds">seeds</th>',
             '<th class="sort text" data-sort="status">status</th>']
    for m in metrics:
        spec = specs[m]
        unit = {"target": "unit of the target", "": ""}.get(spec["unit"], spec["unit"])
        direction = (f"{ARROWS.get(spec['direction'], '')} "
                     f"{DIRECTION_WORDS.get(spec['direction'], '')}").strip()
        if spec["direction"] == "target" and spec.get("ideal") is not None:
            direction = f"→ nearest {spec['ideal']:g}"
        heads.append(f'<th class="sort" data-sort="{_e(m)}" '
                     f'title="{_e(spec.get("summary") or "")}">'
                     f"{_e(spec['label'])}<br><small>{_e(direction)}"
                     f"{'<br>' + _e(unit) if unit else ''}</small></th>")
    heads += ['<th class="sort" data-sort="fit_s">fit<br><small>s, ↓</small></th>',
              '<th class="sort" data-sort="predict_ms">predict<br><small>ms/structure, ↓'
              "</small></th>"]
    body = []
    for _, row in table.iterrows():
        strategy, backbone = method_parts(row["method"])
        k = int(row.get("collapsed") or 0)
        status = f"COLLAPSED ({k})" if k else ("quick" if row["quick"] else "ok")
        cls = "collapsed" if k else ""
        cells = [
            f'<td class="method text" data-f="{_e(row["method"])}"><span class="swatch" '
            f'style="background:{method_colour(row["method"])}"></span>'
            f'{_e(row["label"])}</td>',
            f'<td class="backbone text" data-f="{_e(backbone or "-")}">'
            f'{_e(backbone or "-")}</td>',
            f'<td class="train_size" data-f="{int(row["train_size"])}">'
            f'{int(row["train_size"])}</td>',
            f'<td class="split text" data-f="{_e(row["split"])}">{_e(row["split"])}</td>',
            f'<td class="target text" data-f="{_e(row["target"])}">{_e(row["target"])} '
            f'<small>({_e(TARGET_UNITS.get(row["target"], ""))})</small></td>',
            f'<td class="seeds">{int(row["seeds"])}</td>',
            f'<td class="status text">{status}</td>',
        ]
        cells += [_cell(row.get(m), m) for m in metrics]
        cells += [f'<td class="fit_s" data-v="{row["fit_s"]:.6g}">{row["fit_s"]:.4g}</td>',
                  f'<td class="predict_ms" data-v="{row["predict_ms"]:.6g}">'
                  f'{row["predict_ms"]:.3g}</td>']
        body.append(f'<tr class="{cls}">' + "".join(cells) + "</tr>")
    selects = []
    for col in FILTER_COLUMNS:
        if col == "backbone":
            values = sorted({method_parts(m)[1] or "-" for m in table["method"]})
        elif col == "target":
            values = sorted(set(table["target"]))
        else:
            values = sorted(set(table[col]), key=lambda v: (str(type(v)), v))
        options = "".join(f'<option value="{_e(v)}">{_e(v)}</option>' for v in values)
        selects.append(f'<label>{_e(col.replace("_", " "))} <select data-col="{col}">'
                       f'<option value="">all</option>{options}</select></label>')
    # The filter columns are read from data-f (List.js reads a cell's HTML otherwise).
    names = [{"name": c, "attr": "data-f"} for c in FILTER_COLUMNS] + ["seeds", "status"]
    names += [{"name": m, "attr": "data-v"} for m in metrics]
    names += [{"name": "fit_s", "attr": "data-v"}, {"name": "predict_ms", "attr": "data-v"}]
    text = (f'<div id="{tid}"><div class="filters">{"".join(selects)}'
            '<input class="search" placeholder="search any text"> '
            f'<span><span class="shown"></span> of {len(body)} rows</span></div>'
            f'<div class="scroll"><table><thead><tr>{"".join(heads)}</tr></thead>'
            f'<tbody class="list">{"".join(body)}</tbody></table></div></div>')
    return text, names


def provenance_table(records: list[dict], tid: str) -> tuple[str, list]:
    rows = []
    for r in sorted(records, key=lambda r: (r["method"]["key"], r["train_size"], r["seed"])):
        budget = r.get("budget") or {}
        steps = budget.get("steps_per_model") or []
        rows.append(
            "<tr>"
            f'<td class="p_method text">{_e(r["method"]["key"])}</td>'
            f'<td class="p_size">{r["train_size"]}</td><td class="p_seed">{r["seed"]}</td>'
            f'<td class="p_id text"><code>{_e(r["run_id"])}</code></td>'
            f'<td class="p_commit text"><code>{_e(str(r.get("commit") or "?")[:10])}</code>'
            f'{" (dirty)" if r.get("dirty") else ""}</td>'
            f'<td class="p_threads">{_e(r.get("threads", "?"))}</td>'
            f'<td class="p_steps">{max(steps) if steps else "-"}</td>'
            f'<td class="p_quick text">{"quick" if r.get("quick") else ""}</td>'
            f'<td class="p_collapsed text">'
            f'{"COLLAPSED" if (r.get("collapse") or {}).get("collapsed") else ""}</td></tr>')
    names = ["p_method", "p_size", "p_seed", "p_id", "p_commit", "p_threads", "p_steps",
             "p_quick", "p_collapsed"]
    heads = ["method", "train size", "seed", "record (run id)", "commit", "threads",
             "steps per model", "quick", "collapsed"]
    head = "".join(f'<th class="sort{" text" if n in ("p_method", "p_id", "p_commit") else ""}"'
                   f' data-sort="{n}">{h}</th>' for n, h in zip(names, heads, strict=True))
    text = (f'<div id="{tid}"><div class="filters"><input class="search" '
            'placeholder="search records"> <span><span class="shown"></span> of '
            f'{len(rows)} records</span></div><div class="scroll"><table><thead><tr>{head}'
            f'</tr></thead><tbody class="list">{"".join(rows)}</tbody></table></div></div>')
    return text, names


def _cards_dir() -> Path | None:
    from uqbench.cards import CARDS_DIR

    return CARDS_DIR if CARDS_DIR.is_dir() else None


def method_cards(records: list[dict], cards: Path | None) -> str:
    """What each method of the page is (its card), its choices, and its measured cost."""
    out = []
    for method in sorted({r["method"]["key"] for r in records}):
        runs = [r for r in records if r["method"]["key"] == method]
        card = {}
        if cards is not None and (cards / f"{method}.yaml").is_file():
            card = yaml.safe_load((cards / f"{method}.yaml").read_text()) or {}
        fit = sum(r["timings"]["fit_s"] for r in runs) / len(runs)
        pred = 1e3 * sum(r["timings"]["predict_s_per_structure"] for r in runs) / len(runs)
        params = runs[0]["method"].get("hyperparameters") or {}
        refs = "".join(f"<li>{_e(ref.get('citation', ''))}</li>"
                       for ref in card.get("references") or [])
        choices = "".join(f"<dt>{_e(k)}</dt><dd><code>{_e(json.dumps(v))}</code></dd>"
                          for k, v in sorted(params.items()))
        out.append(
            f'<div class="card" id="card-{_e(method)}"><h3><span class="swatch" style='
            f'"background:{method_colour(method)}"></span>{_e(card.get("name", method))}'
            f" <small><code>{_e(method)}</code></small></h3>"
            f"<p>{_e(card.get('summary', 'No card found (a plugin method?).'))}</p>"
            f"<p class=\"note\">Cost here: fit {fit:.1f} s, prediction {pred:.3g} ms per "
            f"structure (mean over {len(runs)} record(s)); "
            f"{runs[0].get('n_parameters') or '?'} parameters.</p>"
            f"<details><summary>Hyperparameters of the first record</summary><dl>{choices}"
            f"</dl></details>"
            + (f"<details><summary>References</summary><ul>{refs}</ul></details>"
               if refs else "") + "</div>")
    return "".join(out)


def ranked_tables(frame: pd.DataFrame, specs: dict) -> tuple[str, list[tuple[str, list]]]:
    """One ranked table per training size (largest first): the headline metrics as seed
    means ± 95 % interval half-widths, sorted by test force CRPS, the best of a column
    starred only where its interval clears the runner-up's; collapsed rows last."""
    from uqbench.report.ranking import DEFAULT_SORT, HEADLINES, ranked

    quick = bool(frame["quick"].all())  # a page of smoke tests ranks them, saying so
    part = frame[frame["quick"] == quick]
    directions = {m: spec.get("direction", "") for m, spec in specs.items()}
    ideals = {m: spec.get("ideal") for m, spec in specs.items()}
    pieces, tables = [], []
    for size in sorted(set(part["train_size"]), reverse=True):
        table = ranked(part.assign(quick=False), int(size), directions, ideals)
        if table.empty:
            continue
        tid = f"ranked-n{int(size)}"
        heads = ['<th class="sort text" data-sort="r_label">method</th>',
                 '<th class="sort" data-sort="r_seeds">seeds</th>']
        names: list = ["r_label", "r_seeds"]
        for h in HEADLINES:
            spec = specs.get(h.metric, {})
            arrow = ARROWS.get(spec.get("direction", ""), "")
            if spec.get("direction") == "target" and spec.get("ideal") is not None:
                arrow = f"→{spec['ideal']:g}"
            unit = (TARGET_UNITS.get(h.target, "") if spec.get("unit") == "target"
                    else spec.get("unit", ""))
            ranked_by = " data-ranked" if h.key == DEFAULT_SORT else ""
            heads.append(f'<th class="sort" data-sort="{h.key}"{ranked_by}>{_e(h.label)}<br><small>'
                         f"{_e(arrow)}{' ' + _e(unit) if unit else ''}</small></th>")
            names.append({"name": h.key, "attr": "data-v"})
            if f"{h.key}_reference" in table:
                heads.append(f'<th class="sort" data-sort="{h.key}_ref">size only<br>'
                             "<small>reference</small></th>")
                names.append({"name": f"{h.key}_ref", "attr": "data-v"})
        heads += ['<th class="sort" data-sort="r_fit">fit<br><small>s ↓</small></th>',
                  '<th class="sort" data-sort="r_predict">predict<br><small>ms/structure ↓'
                  "</small></th>"]
        names += [{"name": "r_fit", "attr": "data-v"}, {"name": "r_predict", "attr": "data-v"}]
        body = []
        for _, row in table.iterrows():
            k = int(row["collapsed"])
            cells = [f'<td class="r_label text"><span class="swatch" style="background:'
                     f'{method_colour(row["method"])}"></span>{_e(row["label"])}'
                     f'{f" <strong>COLLAPSED ({k})</strong>" if k else ""}</td>',
                     f'<td class="r_seeds">{int(row["seeds"])}</td>']
            for h in HEADLINES:
                mean, half = row[h.key], row[f"{h.key}_half"]
                if pd.isna(mean):
                    cells.append(f'<td class="{h.key}" data-v="">–</td>')
                else:
                    text = f"{mean:.3g}" + ("" if pd.isna(half) else f" ± {half:.2g}")
                    star = " ★" if row.get(f"{h.key}_best") else ""
                    cells.append(f'<td class="{h.key}" data-v="{mean:.10g}">{_e(text)}'
                                 f"{star}</td>")
                if f"{h.key}_reference" in table:
                    ref = row[f"{h.key}_reference"]
                    cells.append(f'<td class="{h.key}_ref" data-v="{ref:.10g}">'
                                 f'{"–" if pd.isna(ref) else f"{ref:.3g}"}</td>')
            cells += [f'<td class="r_fit" data-v="{row["fit_s"]:.6g}">{row["fit_s"]:.3g}</td>',
                      f'<td class="r_predict" data-v="{row["predict_ms"]:.6g}">'
                      f'{row["predict_ms"]:.3g}</td>']
            body.append(f'<tr class="{"collapsed" if k else ""}">' + "".join(cells) + "</tr>")
        pieces.append(
            f"<h3>{int(size)} training structures</h3>"
            f'<div id="{tid}"><div class="filters"><input class="search" placeholder='
            f'"search methods"> <span><span class="shown"></span> of {len(body)} rows</span>'
            f'</div><div class="scroll"><table><thead><tr>{"".join(heads)}</tr></thead>'
            f'<tbody class="list">{"".join(body)}</tbody></table></div></div>')
        tables.append((tid, names))
    note = ("<p class=\"note\">Ranked by test force CRPS (click a header to rank by another "
            "column). Each value is the mean over seeds ± the half-width of its 95 % "
            "Student-t interval; OOD columns average the ood-* splits per seed. ★ marks the "
            "best row of a column only where its interval does not overlap the runner-up's; "
            "without a star the best is not resolved. \"size only\" is the ROC-AUC of a "
            "detector that only counts atoms: an OOD ROC-AUC means something only above it. "
            "Rows with collapsed seeds sit last, unranked.</p>")
    return note + "".join(pieces), tables


def dataset_page(dataset: str, records: list[dict], frame: pd.DataFrame, figures: list[Path],
                 specs: dict, cards: Path | None) -> str:
    ranking, ranked_ids = ranked_tables(frame, specs)
    table, metrics = summary_rows(frame, specs)
    results, names = results_table(table, metrics, specs, "results")
    prov, prov_names = provenance_table(records, "records")
    quick_only = bool(frame["quick"].all())
    figs = "".join(
        f'<figure><img src="{_e(p.name)}" alt="{_e(p.stem)}" loading="lazy">'
        f"<figcaption>{_e(p.name)}</figcaption></figure>" for p in figures)
    commits = sorted({str(r.get("commit") or "?")[:10] for r in records})
    body = (
        f'<p><a href="index.html">← all datasets</a></p><h1>{_e(dataset)}</h1>'
        + ("<p><strong>Only quick (smoke-test) runs: these numbers are not results."
           "</strong></p>" if quick_only else "")
        + f"<p class=\"note\">{len(records)} record(s) at commit(s) "
        f"{', '.join(f'<code>{c}</code>' for c in commits)}. Mean ± standard deviation "
        "over seeds. A row marked COLLAPSED holds seeds whose mean did not beat the constant "
        "predictor (the collapse gate): kept for the record, never ranked. NaN marks seeds "
        "where a metric is undefined (Spearman of a deterministic model, whose std is zero) "
        "or whose predictions were not finite (n_nonfinite in the CSV). Click a header to "
        "sort; choose values to "
        f'filter. Tables also as <a href="{_e(dataset)}.csv">CSV</a> and '
        f'<a href="{_e(dataset)}.md">Markdown</a>.</p>'
        f"<h2>Ranking</h2>{ranking}"
        f"<h2>All results</h2>{results}<h2>Figures</h2>{figs or '<p>none</p>'}"
        f"<h2>Methods</h2>{method_cards(records, cards)}"
        f"<h2>Records (provenance)</h2>{prov}")
    return _page(f"uqbench: {dataset}", body,
                 ranked_ids + [("results", names), ("records", prov_names)])


def index_page(datasets: dict[str, list[dict]]) -> str:
    rows = []
    for dataset, records in sorted(datasets.items()):
        methods = sorted({r["method"]["key"] for r in records})
        sizes = sorted({r["train_size"] for r in records})
        quick = all(r.get("quick") for r in records)
        rows.append(
            f'<tr><td class="d_name text"><a href="{_e(dataset)}.html">{_e(dataset)}</a>'
            f'{" (quick runs only)" if quick else ""}</td>'
            f'<td class="d_records">{len(records)}</td>'
            f'<td class="d_methods">{len(methods)}</td>'
            f'<td class="d_sizes text">{", ".join(map(str, sizes))}</td>'
            f'<td class="d_list text">{_e(", ".join(methods))}</td></tr>')
    names = ["d_name", "d_records", "d_methods", "d_sizes", "d_list"]
    heads = ["dataset", "records", "methods", "training sizes", "methods run"]
    head = "".join(f'<th class="sort{" text" if n in ("d_name", "d_sizes", "d_list") else ""}"'
                   f' data-sort="{n}">{h}</th>' for n, h in zip(names, heads, strict=True))
    body = (
        "<h1>uqbench leaderboard</h1><p>Which uncertainty method of a machine-learning "
        "interatomic potential can you trust, on which data, at what cost? Each dataset page "
        "holds the scores (mean ± sd over seeds), the figures, each method's card and cost, "
        "and the record behind every number.</p>"
        '<div id="datasets"><div class="filters"><input class="search" placeholder='
        '"search datasets"> <span><span class="shown"></span> dataset(s)</span></div>'
        f'<table><thead><tr>{head}</tr></thead><tbody class="list">{"".join(rows)}'
        "</tbody></table></div>"
        '<p class="note">All results in one tidy table: <a href="results.csv">results.csv'
        "</a>. Regenerate this site from the records with <code>uqbench leaderboard "
        "--results leaderboard/records --out leaderboard</code>.</p>")
    return _page("uqbench leaderboard", body, [("datasets", names)])


def write_site(records: list[dict], frame: pd.DataFrame, out_dir: Path,
               figures: dict[str, list[Path]], cards: Path | None = None) -> list[Path]:
    """Write ``index.html`` and ``<dataset>.html`` for every dataset in ``frame``."""

    out_dir = Path(out_dir)
    specs = _metric_specs(records)
    cards = cards if cards is not None else _cards_dir()
    by_dataset: dict[str, list[dict]] = {}
    for r in records:
        by_dataset.setdefault(r["dataset"]["key"], []).append(r)
    written = []
    for dataset, part in frame.groupby("dataset", sort=True):
        path = output_path(out_dir, f"{dataset}.html")
        write_text_atomic(path, dataset_page(dataset, by_dataset[dataset], part,
                                              figures.get(dataset, []), specs, cards))
        written.append(path)
    index = out_dir / "index.html"
    write_text_atomic(index, index_page({d: by_dataset[d] for d in frame["dataset"].unique()}))
    return [index] + written
