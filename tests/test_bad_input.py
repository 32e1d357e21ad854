"""Bad input, table-driven: each case exits with status 2, says one line on stderr that
begins ``uqbench: error:``, shows no traceback, and leaves nothing behind under --out —
within seconds, before any data is generated or any model trained."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from uqbench.cli import main


class _Evil:
    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def _files(tmp_path):
    text = tmp_path / "text.pt"
    text.write_text("not a checkpoint\n")
    evil = tmp_path / "evil.pt"
    torch.save({"model": _Evil(tmp_path / "pwned")}, evil)
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps({"a": 1}))
    afile = tmp_path / "afile"
    afile.write_text("x")
    two_col = tmp_path / "two.xyz"
    two_col.write_text(10 * ('2\nProperties=species:S:1:pos:R:3:forces:R:2 energy=-1.0 '
                             'pbc="F F F"\nH 0 0 0 0.1 0.2\nH 0 0 0.7 0.1 0.2\n'))
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    made = {name: tmp_path / f"{name.lower()}.xyz" for name in XYZ}
    for name, path in made.items():
        path.write_text(XYZ[name])
    return {"TEXT": text, "EVIL": evil, "RAW": raw, "AFILE": afile, "TWO": two_col,
            "EMPTY": empty, **made}


def _frame(n: int, seed: int, lattice: str = "", energy: str = "-1.0", pbc: str = "F F F",
           spread: float = 3.0) -> str:
    rng = np.random.default_rng(seed)
    head = (f'{n}\n{lattice}Properties=species:S:1:pos:R:3:forces:R:3 energy={energy} '
            f'pbc="{pbc}"\n')
    rows = "".join("H {} {} {} {} {} {}\n".format(*(rng.normal(size=3) * spread),
                                                    *rng.normal(size=3)) for _ in range(n))
    return head + rows


#: Data files that are wrong in one way each (20 frames: enough for every split).
XYZ = {
    "ZEROVOL": "".join(_frame(4, i, 'Lattice="1 0 0 0 1 0 0 0 0" ', pbc="T T T")
                       for i in range(20)),
    "NOATOMS": "".join(_frame(4, i) for i in range(19)) + _frame(0, 99),
    "ABC": "".join(_frame(4, i, energy="abc" if i == 3 else "-1.0") for i in range(20)),
    "DENSE": "".join(_frame(9, i, 'Lattice="1 0 0 0 1 0 0 0 1" ', pbc="T T T", spread=0.3)
                     for i in range(20)),
}


RUN = ["run", "--method", "ensemble-egnn", "--dataset", "nbody"]
P = ["run", "--method", "p-egnn", "--dataset", "nbody"]
B = ["run", "--method", "blip-egnn", "--dataset", "nbody"]
CASES = [
    (["run", "--method", "nope", "--dataset", "nbody"], "unknown method"),
    (["run", "--method", "egnn", "--dataset", "nope"], "unknown dataset"),
    (RUN + ["--train-size", "0"], "--train-size"),
    (RUN + ["--train-size", "-5"], "--train-size"),
    (RUN + ["--n-samples", "0"], "--n-samples"),
    (RUN + ["--seed", "-1"], "seed"),
    (RUN + ["--seed", "4294967296"], "seed"),
    (RUN + ["-p", "n_members=-2"], "n_members"),
    (["run", "--method", "mcdropout-egnn", "--dataset", "nbody", "-p", "dropout=1.5"],
     "dropout"),
    (RUN + ["-p", "batch_size=0"], "batch_size"),
    (RUN + ["-p", "n_samples=0"], "n_samples"),
    (RUN + ["-p", "backbone_options={hidden: 32"], "YAML"),
    (RUN + ["-p", "max_epochs=abc"], "max_epochs"),
    (RUN + ["-p", "backbone_options={hiden: 32}"], "no option"),
    (RUN + ["-p", "max_epochs=2.5"], "max_epochs"),
    (RUN + ["-p", "lr=-1"], "lr"),
    (RUN + ["-p", "lr=.nan"], "lr"),
    (RUN + ["-p", "dtype=float16"], "dtype"),
    (RUN + ["-p", "force_weight=-1"], "force_weight"),
    (RUN + ["-p", "max_steps=-1"], "max_steps"),
    (RUN + ["-p", "patience=0"], "patience"),
    (RUN + ["-p", "seed=5"], "--seed"),
    (RUN + ["-p", "device=cpu"], "--device"),
    (RUN + ["-p", "nope=1"], "unknown hyperparameter"),
    (RUN + ["-p", "noequals"], "KEY=VALUE"),
    (RUN + ["--device", "cuda"] if not torch.cuda.is_available() else RUN + ["--device", "x"],
     "cuda"),
    (RUN + ["--device", "tpu"], "device"),
    (RUN + ["--threads", "0"], "threads"),
    (RUN + ["--train-size", "1e9"], "--train-size"),
    (P + ["-p", "crps_alpha=1.5"], "crps_alpha"),
    (P + ["-p", "finetune_fraction=0"], "finetune_fraction"),
    (P + ["-p", "train_samples=1"], "train_samples"),
    (P + ["-p", "noise_dim=0"], "noise_dim"),
    (P + ["-p", "perturbation_bound=-1"], "perturbation_bound"),
    (B + ["-p", "prior=flat"], "prior"),
    (B + ["-p", "warm_start_fraction=1.0"], "warm_start_fraction"),
    (B + ["-p", "kl_anneal=2"], "kl_anneal"),
    (B + ["-p", "kl_weight=-1"], "kl_weight"),
    (RUN + ["--weights", "TEXT"], "pretrained backbones"),
    (["run", "--method", "p-chgnet", "--dataset", "silica-bks-small", "--quick", "--weights",
      "TEXT"], "CHGNet weights"),
    (["run", "--method", "p-chgnet", "--dataset", "silica-bks-small", "--quick", "--weights",
      "EVIL"], "CHGNet weights"),
    (["run", "--method", "p-chgnet", "--dataset", "silica-bks-small", "--quick", "--weights",
      "RAW"], "CHGNet"),
    (["run", "--method", "p-orb", "--dataset", "silica-bks-small", "--quick", "--weights",
      "TEXT"], "orb"),
    (RUN + ["--weights", "missing.ckpt"], "does not exist"),
    (RUN + ["--split-key", "config_type"], "takes no option"),
    (["run", "--method", "egnn", "--dataset", "missing.xyz"], "missing.xyz"),
    (["run", "--method", "egnn", "--dataset", "EMPTY"], "empty.xyz"),
    (["run", "--method", "egnn", "--dataset", "TWO"], "forces"),
    (["leaderboard", "--results", "no-such-dir"], "no results directory"),
    (["compare", "--results", "no-such-dir", "-m", "a", "-b", "b"], "no results directory"),
    (["plot", "no-such-record.json"], "cannot read record"),
    (["datasets", "fetch", "nbody"], "nothing to fetch"),
    # data files wrong in one way each, named by file and frame before any training
    (["run", "--method", "egnn", "--dataset", "ZEROVOL"], "zero volume"),
    (["run", "--method", "egnn", "--dataset", "NOATOMS"], "structure 19 has no atoms"),
    (["run", "--method", "egnn", "--dataset", "ABC"], "'abc' is not a number"),
    (["run", "--method", "egnn", "--dataset", "DENSE", "-p", "backbone__cutoff=5.0"],
     "neighbours per atom"),
    (["run", "--method", "egnn", "--dataset", "DENSE"], "neighbours per atom"),
    (["run", "--method", "chgnet", "--dataset", "DENSE"], "neighbours per atom"),
    # bounds on what a run may ask for
    (RUN + ["--n-samples", "100000"], "--n-samples"),
    (RUN + ["-p", "n_samples=5000"], "n_samples"),
    (["run", "--method", "mcdropout-egnn", "--dataset", "nbody", "--n-samples", "1025"],
     "1024"),
    # outputs never overwrite inputs
    (["plot", "RECORD", "--out", "RECORD"], ".png"),
    (["plot", "RECORD", "--out", "fig.txt"], ".png"),
]


@pytest.mark.parametrize("args,expected", CASES, ids=[" ".join(a[:1] + a[-2:]) for a, _ in
                                                       CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(args, expected, tmp_path, capsys,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = _files(tmp_path)
    record = tmp_path / "record.json"
    record.write_text("{}")
    files["RECORD"] = record
    args = [str(files.get(a, a)) for a in args]
    out = tmp_path / "out"
    if args[0] == "run":
        args += ["--out", str(out)]
    cache = tmp_path / "cache"  # the conftest's isolated cache, checked untouched
    monkeypatch.setenv("UQBENCH_CACHE", str(cache))
    inputs = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("uqbench: error:"), err
    assert "Traceback" not in err
    assert expected.lower() in lines[0].lower(), lines[0]
    assert not out.exists()
    assert not (tmp_path / "pwned").exists()
    # inputs unchanged, nothing new in the working directory but what `main` may make
    # for the data cache (an empty directory)
    assert {p: p.read_bytes() for p in inputs} == inputs
    new = {p.name for p in tmp_path.iterdir()} - {p.name for p in inputs} - {"cache", "out"}
    assert not new, new
    assert not [p for p in cache.rglob("*") if p.is_file()]


@pytest.mark.parametrize("value, expected", [("AFILE", "not a usable directory"),
                                             ("/proc/nope", "not a usable directory")])
def test_a_bad_cache_directory_is_one_line_before_any_work(value, expected, tmp_path, capsys,
                                                          monkeypatch):
    files = _files(tmp_path)
    monkeypatch.setenv("UQBENCH_CACHE", str(files.get(value, value)))
    out = tmp_path / "out"
    assert main(RUN + ["--quick", "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "UQBENCH_CACHE" in lines[0]
    assert not out.exists()


def test_a_second_run_of_a_running_configuration_is_refused(tmp_path, capsys):
    """A live lock (this test's own parent process id stands for the first run) stops the
    second run in one line, writing nothing; a stale lock is taken over."""
    import os

    from uqbench.runner import RunConfig, identity, planned_path, prepare

    out = tmp_path / "out"
    cfg = RunConfig(method="egnn", dataset="nbody", quick=True, out=out, train_size=30,
                    params={"max_steps": 2})
    path = planned_path(cfg)
    method, data_kwargs = prepare(cfg)
    assert path.name == identity(cfg, method, data_kwargs)[0] + ".json"
    path.parent.mkdir(parents=True)
    lock = path.with_suffix(".lock")
    lock.write_text(str(os.getppid()))
    command = ["run", "-m", "egnn", "-d", "nbody", "--quick", "--train-size", "30", "-p",
               "max_steps=2", "--out", str(out)]
    assert main(command) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "already running" in lines[0]
    assert not path.exists() and lock.exists()
    lock.write_text("999999999")  # a process that is gone
    assert main(command) == 0
    assert path.exists() and not lock.exists()


def test_an_empty_out_is_refused_not_taken_as_the_working_directory(tmp_path, capsys,
                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    for command in (RUN, ["sweep", "any.yaml"]):
        assert main(command + ["--out", ""]) == 2
        err = capsys.readouterr().err
        assert "must not be empty" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(RUN + ["--out", str(afile / "sub")]) == 2
    assert "not a directory" in capsys.readouterr().err


SWEEPS = [
    ("methods: [egnn]\ndatasets: [nbody]\ncolour: red\n", "unknown key"),
    ("methods: egnn\ndatasets: [nbody]\n", "list"),
    ("methods: [egnn]\ndatasets: [nbody]\ntrain_sizes: ten\n", "list"),
    ("methods: [egnn]\ndatasets: [nbody]\ntrain_sizes: [ten]\n", "train_sizes"),
    ("methods: [egnn]\ndatasets: [nbody]\nparams: [{when: {train_sizes: 100}, set: {}}]\n",
     "when"),
    ("methods: [egnn]\ndatasets: [nbody]\nparams: [{set: {n_members: 1}}]\n", "n_members"),
    ("methods: [ensemble-egnn]\ndatasets: [nbody]\nparams: [{set: {n_members: 1}}]\n",
     "n_members"),
    ("methods: [egnn]\ndatasets: [nbody]\nseeds: [-1]\n", "seed"),
    ("[1, 2]\n", "mapping"),
    ("methods: [egnn\n", "cannot read"),
    ("methods: [egnn]\ndatasets: [nbody]\nmethods: [p-egnn]\n", "duplicate key"),
    ("methods: [egnn]\ndatasets: [nbody]\nseeds: [" + ", ".join(map(str, range(1001)))
     + "]\n", "--yes"),
    ("methods: [egnn, p-egnn]\ndatasets: [nbody]\ntrain_sizes: ["
     + ", ".join(map(str, range(1, 301))) + "]\nseeds: [" + ", ".join(map(str, range(200)))
     + "]\n", "at most 100,000"),
]


@pytest.mark.parametrize("text,expected", SWEEPS)
def test_bad_sweep_files(text, expected, tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(text)
    out = tmp_path / "out"
    assert main(["sweep", str(spec), "--out", str(out), "--serial"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("uqbench: error:"), err
    assert expected.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in err
    assert not out.exists()
