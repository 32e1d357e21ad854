"""Write the leaderboard of a folder of records: ``results.csv``, per dataset its wide CSV,
Markdown, figures and web page, and ``index.html``."""

from __future__ import annotations

from pathlib import Path

from uqbench.progress import note
from uqbench.report.tables import load_records, markdown, tidy, wide
from uqbench.results import output_path, write_text_atomic


def write_leaderboard(results_dir: Path, out_dir: Path) -> tuple[list[Path], list[str]]:
    """Write ``results.csv``, and per dataset ``<dataset>.csv``, ``<dataset>.md``, its
    figures and ``<dataset>.html``, and ``index.html``; returns files written, skips."""
    records, skipped = load_records(results_dir)
    note("leaderboard: %d record(s) read from %s (%d skipped)", len(records), results_dir,
         len(skipped))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = tidy(records)
    written = [out_dir / "results.csv"]
    write_text_atomic(written[0], frame.to_csv(index=False))
    figures: dict[str, list[Path]] = {}
    for dataset, part in frame.groupby("dataset", sort=True):
        note("leaderboard: %s: tables and figures", dataset)
        first_figure = len(written) + 2
        csv_path = output_path(out_dir, f"{dataset}.csv")
        md_path = output_path(out_dir, f"{dataset}.md")
        write_text_atomic(csv_path, wide(part).to_csv(index=False))
        write_text_atomic(md_path, markdown(part, dataset))
        written += [csv_path, md_path]
        full = part[~part["quick"]]
        # Figures draw the raw configurations (a recalibration moves neither the mean nor,
        # being monotone, a ranking); recalibrated calibration curves get figures of their
        # own, so no panel holds more than about eight series.
        raw = part[part["variant"].fillna("raw").isin(["raw", ""])] if "variant" in part \
            else part
        full = full.loc[full.index.intersection(raw.index)]
        part = part.loc[raw.index]
        if full["train_size"].nunique() > 1:
            from uqbench.report.figures import metric_vs_train_size_grid

            written.append(metric_vs_train_size_grid(
                full, "crps", output_path(out_dir, f"{dataset}-crps-vs-train-size.png")))
        from uqbench.report.figures import leaderboard_figures, metric_by_split_figure

        written += leaderboard_figures(records, out_dir, dataset)
        chosen = full if not full.empty else part
        written.append(metric_by_split_figure(
            chosen, "spearman", output_path(out_dir, f"{dataset}-spearman-by-split.png")))
        figures[dataset] = written[first_figure:]
    if not frame.empty:
        from uqbench.report.site import write_site

        written += write_site(records, frame, out_dir, figures)
    return written, skipped
