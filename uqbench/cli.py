"""The ``uqbench`` command line. Errors in user input: one line on stderr, exit status 2."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from uqbench.errors import UQBenchError


def _parse_params(values: tuple[str, ...], flag: str = "--param") -> dict:
    from uqbench.params import parse_assignments

    return parse_assignments(values, flag)


def _out_dir(ctx, param, value: str) -> Path:
    """An output directory; an empty one is refused (it would mean the working directory)."""
    if not value:
        raise click.BadParameter("must not be empty (use . for the working directory)",
                                 ctx=ctx, param=param)
    return Path(value)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """uqbench: benchmark uncertainty quantification of machine-learning potentials.

    \b
    Typical use:
      uqbench methods                      # what can be run
      uqbench run --method ensemble-egnn --dataset nbody --quick
      uqbench leaderboard --results results --out leaderboard

    Progress: a bar on a terminal; where stderr is not a terminal (a log file, a batch
    job), a line per task every 30 s with its ETA (UQBENCH_PROGRESS_INTERVAL sets the
    seconds). Every run also writes <record>.log beside its record.
    """
    from uqbench.progress import setup_logging

    setup_logging()


@cli.command()
@click.option("--method", "-m", required=True, help="Method key, e.g. ensemble-egnn "
              "(see `uqbench methods`).")
@click.option("--dataset", "-d", required=True, help="Dataset key, e.g. nbody "
              "(see `uqbench datasets`).")
@click.option("--train-size", type=int, default=None,
              help="Training structures (default: the dataset's own).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed for model initialisation and training order.")
@click.option("--device", default="auto", show_default=True,
              help="auto (CUDA when present), cpu or cuda.")
@click.option("--n-samples", type=int, default=None,
              help="Samples drawn at prediction (default: the method's own).")
@click.option("--out", type=click.Path(), default="results", callback=_out_dir,
              show_default=True, help="Directory for result records.")
@click.option("--quick", is_flag=True,
              help="Smoke-test budget: small data, small model, few optimiser steps.")
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE",
              help="Override a method hyperparameter (value parsed as YAML); repeatable.")
@click.option("--dataset-option", "-o", "dataset_options", multiple=True, metavar="KEY=VALUE",
              help="Set an option of the dataset's loader (value parsed as YAML), e.g. "
                   "-o temperature=2.0; repeatable. Options are checked against the loader "
                   "before any work.")
@click.option("--data-path", default=None, metavar="FILE",
              help="A local copy of a dataset's file (e.g. silica's dataset.scan.2.xyz).")
@click.option("--split-key", default=None, metavar="KEY",
              help="With --dataset FILE.xyz: the info key naming each structure's split "
                   "(train, val, test, ood-*; 'id' for a random ID split).")
@click.option("--weights", default=None, metavar="CKPT",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A local checkpoint for a pretrained backbone (orb, chgnet), used "
                   "instead of downloaded or packaged weights.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch threads for this run (default 1: safe when runs share cores; a "
                   "lone CHGNet/Orb run is faster with all cores, see benchmarks/threads.json;"
                   " recorded, since the count changes the numbers slightly).")
@click.option("--recalibrate", metavar="KIND[,KIND]", default=None,
              help="Also recalibrate the predictive distribution on the calibration split "
                   "(half of val, disjoint from the val that picks the best weights) and "
                   "write a record with it (the raw record is written too): scalar, one "
                   "std factor per target (the NLL minimiser); isotonic, a monotone map of "
                   "CDF levels per target (Kuleshov et al. 2018); conformal, the "
                   "split-conformal std factor whose 95 % intervals cover >= 95 % of new "
                   "data; scalar,isotonic,conformal writes all from the one fit. Means "
                   "never change.")
@click.option("--allow-overlap", is_flag=True,
              help="Accept identical structures in two splits (refused by default: a "
                   "structure in train and test is not held out); recorded in the run.")
def run(method, dataset, train_size, seed, device, n_samples, out, quick, params,
        dataset_options, data_path, split_key, weights, threads, recalibrate,
        allow_overlap) -> None:
    """Fit METHOD on DATASET, predict every test split, score, and write one record.

    DATASET is a registered key (see `uqbench datasets`), a dataset spec file (YAML naming
    your extxyz files per split; check it with `uqbench datasets check FILE.yaml`) or one
    extxyz file with energies and/or forces.
    """
    from uqbench.report.summary import summary_table
    from uqbench.runner import DEFAULT_THREADS, RunConfig
    from uqbench.runner import run as do_run

    options = _parse_params(dataset_options, "--dataset-option")
    if data_path is not None:
        options["data_path"] = data_path
    if split_key is not None:
        options["split_key"] = split_key
    cfg = RunConfig(method=method, dataset=dataset, train_size=train_size, seed=seed,
                    device=device, n_samples=n_samples, quick=quick,
                    params=_parse_params(params), out=out, dataset_options=options,
                    weights=str(weights.resolve()) if weights else None,
                    threads=threads or DEFAULT_THREADS, recalibrate=recalibrate,
                    allow_overlap=allow_overlap)
    path, record = do_run(cfg)
    click.echo(f"{method} on {record['dataset']['key']} (train size {record['train_size']}, "
               f"seed {seed}, "
               f"{record['device']}, {record['threads']} thread(s)): "
               f"fit {record['timings']['fit_s']:.1f} s")
    click.echo(summary_table(record))
    click.echo("(↓ lower is better, ↑ higher, → nearer the value given; crps and rmse are "
               "in the row's unit; nll is the mean per value in nats (it goes negative as "
               "errors shrink); n = structures with that label; - = not defined for the "
               "split, e.g. OOD AUROC on test; `uqbench metrics` explains each)")
    constant = (record.get("reference") or {}).get("constant", {}).get("splits", {})
    test = constant.get("test", {})
    if test:
        from uqbench.metrics.table import TARGET_UNITS

        parts = ", ".join(f"{t} {v['rmse']:.4g} {TARGET_UNITS.get(t, '')}"
                          for t, v in sorted(test.items()))
        click.echo(f"trivial reference: the constant predictor (the training mean energy per "
                   f"atom, zero forces) has test RMSE {parts}")
    verdict = record["collapse"]
    if verdict["collapsed"]:
        ratios = ", ".join(f"{t} {r:.2f}" for t, r in verdict["rmse_ratio"].items())
        click.echo(f"uqbench: warning: this run is COLLAPSED: its mean is no clear improvement "
                   f"on the constant predictor (RMSE / constant's on test: {ratios}); it is "
                   "marked in the leaderboard and left out of `uqbench compare`", err=True)
    if record.get("recalibration"):
        from uqbench.recalibration import describe

        info = record["recalibration"]
        params = info.get("factors") or info.get("level_maps")
        click.echo(f"recalibrated ({info['method']}, on the "
                   f"{info.get('fitted_on', 'val')} split): "
                   f"{describe(info['method'], params)}; the table above is recalibrated, "
                   f"the raw record is {info['raw_record']}")
    click.echo(f"record: {path}")


@cli.command(name="al")
@click.option("--method", "-m", required=True, help="Method key (see `uqbench methods`).")
@click.option("--dataset", "-d", required=True,
              help="Dataset key or spec; its train split is the pool to label from.")
@click.option("--acquisition", type=click.Choice(["force_std", "energy_std", "random"]),
              default="force_std", show_default=True,
              help="What ranks the unlabelled pool: the largest per-atom force std of a "
                   "structure, its total-energy std, or chance.")
@click.option("--initial", "n_initial", type=int, default=None,
              help="Labelled structures to start from, drawn at random (the same set for "
                   "every method and acquisition at a seed). [default: 50; --quick 16]")
@click.option("--batch", type=int, default=None,
              help="Structures labelled per round. [default: 50; --quick 16]")
@click.option("--rounds", type=int, default=None,
              help="Rounds of labelling after the first fit. [default: 5; --quick 3]")
@click.option("--pool-size", type=int, default=None,
              help="Structures in the pool (the loader's training size; default its own).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the data, the starting set, the models and tie-breaking.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--out", type=click.Path(), default="results", callback=_out_dir,
              show_default=True, help="Records go to OUT/al/<dataset>/<method>/<acquisition>/.")
@click.option("--quick", is_flag=True,
              help="Smoke-test budget: small data, small model, a short loop.")
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE",
              help="Override a method hyperparameter (value parsed as YAML); repeatable.")
@click.option("--dataset-option", "-o", "dataset_options", multiple=True, metavar="KEY=VALUE",
              help="Set an option of the dataset's loader; repeatable.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="torch threads.")
def al(method, dataset, acquisition, n_initial, batch, rounds, pool_size, seed, device, out,
       quick, params, dataset_options, threads) -> None:
    """Pool-based active learning: does the method's uncertainty choose better structures
    to label than chance?

    Starting from a random labelled set, each round fits METHOD afresh (its card's budget:
    the same optimiser steps every round and for every method), scores every test and OOD
    split, and labels the BATCH pool structures the acquisition ranks highest. One record
    per round (its labelled set, the batch it chose, the scores); a killed run resumes at
    its last finished round. Compare acquisitions (and --acquisition random) over seeds.
    """
    from uqbench.active import DEFAULT_LOOP, QUICK_LOOP, ALConfig, run_al

    loop = QUICK_LOOP if quick else DEFAULT_LOOP
    cfg = ALConfig(method=method, dataset=dataset, acquisition=acquisition,
                   n_initial=n_initial if n_initial is not None else loop["n_initial"],
                   batch=batch if batch is not None else loop["batch"],
                   rounds=rounds if rounds is not None else loop["rounds"],
                   pool_size=pool_size, seed=seed, quick=quick, params=_parse_params(params),
                   dataset_options=_parse_params(dataset_options, "--dataset-option"),
                   out=out, threads=threads, device=device)
    paths = run_al(cfg)
    click.echo(f"{len(paths)} round record(s) in {paths[0].parent}")


@cli.command()
@click.argument("sweep_file", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(), default="results", callback=_out_dir,
              show_default=True, help="Directory for result records.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Use an existing Dask scheduler (e.g. tcp://host:8786).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes of the local Dask cluster (default: one per core, "
                   "at most one per run).")
@click.option("--serial", is_flag=True, help="Run in this process, without Dask.")
@click.option("--profile", default=None, metavar="NAME",
              help="Overlay the sweep file's profile NAME (e.g. gpu: the full-size runs).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch threads per run (default: the sweep file's `threads`, else 1).")
@click.option("--yes", is_flag=True,
              help="Run a grid of more than 1 000 configurations (asked for, so that a typo "
                   "in a list does not start days of work).")
def sweep(sweep_file: Path, out: Path, scheduler: str | None, workers: int | None,
          serial: bool, profile: str | None, threads: int | None, yes: bool) -> None:
    """Run every configuration of SWEEP_FILE (YAML) not yet recorded in --out.

    Resumable: recorded runs are skipped; a failed run leaves a .failed file and the sweep
    goes on. Runs go to a local Dask cluster by default, to --scheduler, or to the
    dask-jobqueue cluster that the sweep file's `cluster` names.
    """
    from uqbench.results import check_writable
    from uqbench.runner import prepare
    from uqbench.sweep import (
        SWEEP_CONFIRM,
        SWEEP_MAX,
        expand,
        grid_size,
        load_sweep,
        run_sweep,
        run_sweep_dask,
    )

    spec = load_sweep(sweep_file, profile)
    if threads is not None:
        spec["threads"] = threads
    size = grid_size(spec)
    if size > SWEEP_MAX:
        raise UQBenchError(f"the sweep's grid holds {size:,} configurations; at most "
                           f"{SWEEP_MAX:,} are run from one file (split it)")
    if size > SWEEP_CONFIRM and not yes:
        raise UQBenchError(f"the sweep's grid holds {size:,} configurations (more than "
                           f"{SWEEP_CONFIRM:,}); pass --yes to run them")
    configs = expand(spec, out)
    check_writable(out)
    for cfg in configs:  # validate every configuration before running any
        prepare(cfg)
    click.echo(f"sweep: {len(configs)} configuration(s) in {sweep_file}", err=True)
    if serial:
        counts = run_sweep(configs)
    else:
        counts = run_sweep_dask(configs, scheduler=scheduler, n_workers=workers,
                                cluster_spec=spec.get("cluster"))
    click.echo(f"sweep: {counts['done']} run, {counts['skipped']} already recorded, "
               f"{counts['failed']} failed")
    if counts["failed"]:
        click.echo(f"uqbench: {counts['failed']} run(s) failed; each left <run id>.failed "
                   f"with its error under {out}", err=True)
        raise SystemExit(1)


def _list(kind: str) -> None:
    from uqbench.registry import entries

    found = entries(kind)
    if not found:
        click.echo(f"no {kind}s registered")
    width = max((len(k) for k in found), default=0)
    for key, entry in found.items():
        click.echo(f"{key:<{width}}  {entry.summary}")


@cli.command()
def methods() -> None:
    """List registered UQ methods (built-in and plugins)."""
    _list("method")


@cli.group(invoke_without_command=True)
@click.pass_context
def datasets(ctx) -> None:
    """List registered datasets (built-in and plugins); `check` summarises one (or your own
    spec file); `fetch` downloads one."""
    if ctx.invoked_subcommand is None:
        _list("dataset")


@datasets.command()
@click.argument("dataset")
@click.option("--train-size", type=int, default=None,
              help="Training structures (default: the dataset's own).")
@click.option("--dataset-option", "-o", "dataset_options", multiple=True, metavar="KEY=VALUE",
              help="An option of the dataset's loader (value parsed as YAML); repeatable.")
def check(dataset: str, train_size: int | None, dataset_options: tuple[str, ...]) -> None:
    """Summarise DATASET split by split and list every problem found.

    DATASET is a registered key, a dataset spec file (YAML) or an extxyz file. Prints, per
    split: structures, atoms per structure, elements, how many structures carry each label,
    the energy range, the largest force and the closest pair of atoms; then problems such
    as structures shared between splits, elements unseen in training, atoms too close, or
    energies that look like mixed units. Exit status 1 when problems were found.
    """
    from uqbench import registry
    from uqbench.datasets.check import report
    from uqbench.runner import check_dataset_options

    options = _parse_params(dataset_options, "--dataset-option")
    loader = registry.dataset_loader(dataset)
    check_dataset_options(dataset, loader, options)
    if train_size is not None:
        options["train_size"] = train_size
    text, found = report(registry.load_dataset(dataset, **options))
    click.echo(text)
    if not found:
        click.echo("no problems found")
        return
    click.echo(f"{len(found)} problem(s):")
    for line in found:
        click.echo(f"  - {line}")
    raise SystemExit(1)


@datasets.command()
@click.argument("key")
def fetch(key: str) -> None:
    """Download a dataset that is published online (silica, ethanol) into the cache, each
    file checked against its published checksum."""
    if key == "ethanol":
        from uqbench.datasets.ethanol import fetch_ethanol

        click.echo(str(fetch_ethanol()))
        return
    if key != "silica":
        raise UQBenchError(f"nothing to fetch for {key!r}; fetchable: silica, ethanol "
                           "(the others are generated locally)")
    from uqbench.datasets.silica_gap22 import fetch_silica

    click.echo(str(fetch_silica()))


@cli.command()
def metrics() -> None:
    """List registered metrics (built-in and plugins): key, better direction, unit, what
    it measures. "unit of the target" is eV/atom for energies and eV/Å for forces."""
    from uqbench.metrics.table import MetricSpec
    from uqbench.registry import entries

    found = entries("metric")
    width = max((len(k) for k in found), default=0)
    from uqbench.metrics.table import ARROWS

    arrows = {k: f"{v} {k if k != 'target' else 'nearest'}" for k, v in ARROWS.items()}
    for key, entry in found.items():
        if entry.error is not None:
            click.echo(f"{key:<{width}}  [failed to import: {entry.error}]")
            continue
        spec = entry.obj
        if not isinstance(spec, MetricSpec):
            click.echo(f"{key:<{width}}  [skipped: {entry.target} is a "
                       f"{type(spec).__name__}, not a uqbench.metrics.MetricSpec]")
            continue
        direction = arrows.get(spec.direction, spec.direction)
        if spec.direction == "target" and spec.ideal is not None:
            direction += f" {spec.ideal:g}"
        unit = {"target": "unit of the target", "": "no unit"}.get(spec.unit, spec.unit)
        click.echo(f"{key:<{width}}  {direction:<11} {unit:<18}  {entry.summary}")


@cli.command()
@click.option("--results", type=click.Path(path_type=Path), default=Path("results"),
              show_default=True, help="Directory of result records.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("leaderboard"),
              show_default=True, help="Directory for CSV and Markdown.")
def leaderboard(results: Path, out: Path) -> None:
    """Turn result records into a tidy CSV, a wide CSV per dataset and Markdown."""
    from uqbench.report.leaderboard import write_leaderboard
    from uqbench.results import check_writable

    if not results.is_dir():
        raise UQBenchError(f"no results directory {str(results)!r}")
    check_writable(out)
    written, skipped = write_leaderboard(results, out)
    for msg in skipped:
        click.echo(f"uqbench: warning: skipped {msg}", err=True)
    for path in written:
        click.echo(str(path))


@cli.command()
@click.option("--results", type=click.Path(path_type=Path), default=Path("results"),
              show_default=True, help="Directory of result records.")
@click.option("--method", "-m", required=True, help="The method to assess, e.g. p-egnn.")
@click.option("--baseline", "-b", required=True, help="The method to compare against.")
@click.option("--metric", default="crps", show_default=True, help="A metric key.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Also write the table as CSV to this file.")
@click.option("--include-collapsed", is_flag=True,
              help="Also pair seeds where either run is collapsed (its mean no better "
                   "than the constant predictor); left out by default.")
@click.option("--method-config", default=None, metavar="HASH",
              help="Where METHOD has several configurations: the one whose hash starts so "
                   "(the `config` column of results.csv), or a variant (raw, scalar, "
                   "isotonic, conformal: the `variant` column). Configurations that differ "
                   "only in recalibration default to the raw one.")
@click.option("--baseline-config", default=None, metavar="HASH",
              help="The same for the baseline.")
@click.option("--dataset", default=None, help="Compare on this dataset only (default: all).")
@click.option("--allow-unequal-budgets", is_flag=True,
              help="Also pair runs whose optimiser steps per model differ (refused by "
                   "default: a method trained longer is not a better method).")
@click.option("--markdown", is_flag=True,
              help="Print a Markdown table (improvement with its interval, n, verdict and "
                   "both means) instead of the full text table.")
def compare(results: Path, method: str, baseline: str, metric: str, out: Path | None,
            include_collapsed: bool, method_config: str | None,
            baseline_config: str | None, dataset: str | None,
            allow_unequal_budgets: bool, markdown: bool) -> None:
    """Relative improvement of METHOD over BASELINE, paired by seed, per training size.

    Only runs of one configuration each are paired (quick runs never), and only runs that
    spent the same optimiser steps per model; seeds where either run is collapsed are left
    out unless --include-collapsed. Each row gives the mean improvement over the n paired
    seeds with its 95 % Student-t interval and a verdict: better or worse only where the
    interval excludes zero. The metric may be any registered one with a lower/higher
    direction, plugins' included."""
    from uqbench.report.compare import markdown as as_markdown
    from uqbench.report.compare import relative_improvement
    from uqbench.report.tables import load_records, tidy

    if not results.is_dir():
        raise UQBenchError(f"no results directory {str(results)!r}")
    if out is not None and out.suffix.lower() != ".csv":
        raise UQBenchError(f"--out {str(out)!r} must name a .csv file")
    table = relative_improvement(tidy(load_records(results)[0]), method, baseline, metric,
                                 include_collapsed, method_config, baseline_config,
                                 dataset, allow_unequal_budgets)
    if markdown:
        click.echo(as_markdown(table, method, baseline))
    else:
        click.echo(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out, index=False)


@cli.command()
@click.argument("record", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output PNG (default: beside the record, <run id>.png).")
def plot(record: Path, out: Path | None) -> None:
    """Draw one run's calibration, RMSE-vs-RMV and |error|-vs-std panels from RECORD."""
    from uqbench.report.figures import record_figure
    from uqbench.results import read_record

    out = out or record.with_suffix(".png")
    if out.suffix.lower() != ".png":
        raise UQBenchError(f"--out {str(out)!r} must name a .png file")
    if out.exists() and record.exists() and out.resolve() == record.resolve():
        raise UQBenchError(f"--out {str(out)!r} is the record itself; an output never "
                           "overwrites an input")
    try:
        rec = read_record(record)
    except (OSError, ValueError) as exc:
        raise UQBenchError(f"cannot read record {str(record)!r}: {exc}") from None
    if not rec.get("curves"):
        raise UQBenchError(f"record {str(record)!r} holds no curves to plot")
    out.parent.mkdir(parents=True, exist_ok=True)
    click.echo(str(record_figure(rec, out)))


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="uqbench", standalone_mode=False)
    except UQBenchError as exc:
        click.echo(f"uqbench: error: {exc}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("uqbench: aborted", err=True)
        return 130
    except click.ClickException as exc:  # usage errors: unknown option, bad integer, ...
        click.echo(f"uqbench: error: {exc.format_message()}", err=True)
        return 2
    except SystemExit as exc:  # a command's own status (e.g. 1: problems found)
        return exc.code if isinstance(exc.code, int) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
