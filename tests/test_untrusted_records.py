"""Records are shared, so they are untrusted input: a record may not write outside
``--out``, an output may not overwrite an input, and an invalid record is skipped with one
line naming it and why (never averaged, never a traceback)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from uqbench.cli import main
from uqbench.report.tables import load_records
from uqbench.results import output_path, plain_name, read_record

PUBLISHED = Path(__file__).resolve().parent.parent / "leaderboard" / "superseded" / "protocol-v1"


def _template() -> dict:
    path = sorted((PUBLISHED / "nbody" / "egnn").glob("*.json"))[0]
    return json.loads(path.read_text())


def _write(root: Path, record: dict, name: str = "r.json") -> Path:
    path = root / "nbody" / "egnn" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def _tree(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def test_a_dataset_key_with_dots_writes_nothing_outside_out(tmp_path, capsys):
    record = _template()
    record["dataset"]["key"] = "../../../evil"
    results = tmp_path / "a" / "b" / "results"
    _write(results, record)
    good = _template()
    _write(results, good, "good.json")
    out = tmp_path / "a" / "b" / "lbo" / "x"
    before = _tree(tmp_path) - {out}
    assert main(["leaderboard", "--results", str(results), "--out", str(out)]) == 0
    made = {p for p in _tree(tmp_path) - before if out not in p.parents and p != out}
    assert made <= {out.parent}, made  # the --out folder and what is under it, nothing else
    assert not list(tmp_path.rglob("evil*"))
    err = capsys.readouterr().err
    assert "r.json" in err and "not a plain name" in err
    assert (out / "nbody.csv").exists()  # the valid record still made its table


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".hidden", "", "x" * 200, "a\\b",
                                  "ok name", 3, None])
def test_plain_name_refuses_path_parts(name):
    with pytest.raises(ValueError, match="not a plain name"):
        plain_name(name, "dataset key")
    with pytest.raises(ValueError):
        output_path(Path("out"), name if isinstance(name, str) else "../x")


def test_plain_names_pass():
    for name in ("nbody", "silica-bks-small", "p-egnn", "n100-seed0-8ab3ac707c", "a_b.c+d"):
        assert plain_name(name, "x") == name


def test_plot_refuses_to_overwrite_its_record(tmp_path, capsys):
    path = _write(tmp_path, _template())
    before = path.read_bytes()
    assert main(["plot", str(path), "--out", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("uqbench: error:") and "--out" in err[0]
    assert path.read_bytes() == before
    link = tmp_path / "alias.png"
    os.symlink(path, link)
    assert main(["plot", str(path), "--out", str(link)]) == 2
    assert path.read_bytes() == before


BAD = [
    ("coverage_95", lambda r: r["metrics"]["test"]["forces"].update(coverage_95=7),
     "coverage_95"),
    ("negative crps", lambda r: r["metrics"]["test"]["forces"].update(crps=-1), "crps"),
    ("crps text", lambda r: r["metrics"]["test"]["forces"].update(crps="big"), "big"),
    ("auroc > 1", lambda r: r["metrics"]["ood-n"]["energy"].update(ood_auroc=1.5),
     "ood_auroc"),
    ("spearman < -1", lambda r: r["metrics"]["test"]["energy"].update(spearman=-2),
     "spearman"),
    ("count not whole", lambda r: r["metrics"]["test"]["energy"].update(n_targets=2.5),
     "n_targets"),
    ("seed text", lambda r: r.update(seed="zero"), "seed"),
    ("seed bool", lambda r: r.update(seed=True), "seed"),
    ("train size", lambda r: r.update(train_size=-5), "train_size"),
    ("schema", lambda r: r.update(schema_version=999), "schema_version"),
    ("method key", lambda r: r["method"].update(key="../m"), "method key"),
    ("run id", lambda r: r.update(run_id="../../x"), "run_id"),
    ("quick", lambda r: r.update(quick="yes"), "quick"),
    ("timings", lambda r: r["timings"].update(fit_s=-3), "fit_s"),
    ("metrics shape", lambda r: r.update(metrics={"test": 3}), "metrics"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_an_invalid_record_is_skipped_with_one_line(tmp_path, capsys, case):
    _, spoil, word = case
    record = _template()
    spoil(record)
    bad = _write(tmp_path / "results", record, "bad.json")
    good = _template()
    good["run_id"] = good["run_id"][:-1] + ("0" if good["run_id"][-1] != "0" else "1")
    _write(tmp_path / "results", good, "good.json")
    with pytest.raises(ValueError, match=word):
        read_record(bad)
    records, skipped = load_records(tmp_path / "results")
    assert [r["run_id"] for r in records] == [good["run_id"]]
    assert len(skipped) == 1 and "bad.json" in skipped[0] and word in skipped[0]
    if case is not BAD[0] and case is not BAD[6]:
        return  # the command's own message is checked on two cases (each takes seconds)
    out = tmp_path / "lb"
    assert main(["leaderboard", "--results", str(tmp_path / "results"), "--out",
                 str(out)]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(err) == 1 and "bad.json" in err[0]
    assert "Traceback" not in err[0]


def test_duplicate_run_ids_are_one_row_with_a_warning(tmp_path):
    record = _template()
    _write(tmp_path, record, "a.json")
    _write(tmp_path, record, "b.json")
    records, skipped = load_records(tmp_path)
    assert len(records) == 1
    assert len(skipped) == 1 and "b.json" in skipped[0] and record["run_id"] in skipped[0]


def test_a_record_linked_to_an_endless_file_is_not_read(tmp_path):
    link = tmp_path / "nbody" / "egnn" / "zero.json"
    link.parent.mkdir(parents=True)
    os.symlink("/dev/zero", link)
    with pytest.raises(ValueError, match="not a regular file"):
        read_record(link)
    records, skipped = load_records(tmp_path)
    assert records == [] and "zero.json" in skipped[0]


def test_an_oversized_record_is_refused_unread(tmp_path, monkeypatch):
    import uqbench.results as results

    path = _write(tmp_path, _template())
    monkeypatch.setattr(results, "MAX_RECORD_BYTES", 100)
    with pytest.raises(ValueError, match="at most 100"):
        read_record(path)


def test_every_published_record_is_valid():
    paths = sorted(PUBLISHED.rglob("*.json"))
    assert len(paths) >= 243
    for path in paths:
        read_record(path)


def test_compare_out_must_be_a_csv(tmp_path, capsys):
    path = _write(tmp_path, _template())
    before = path.read_bytes()
    assert main(["compare", "--results", str(tmp_path), "-m", "egnn", "-b", "egnn",
                 "--out", str(path)]) == 2
    assert path.read_bytes() == before
    assert capsys.readouterr().err.startswith("uqbench: error:")
