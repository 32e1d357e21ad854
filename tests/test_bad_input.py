"""Bad input, table-driven: each case exits with status 2, says one line on stderr that
begins ``uqbench: error:``, shows no traceback, and leaves nothing behind under --out —
within seconds, before any data is generated or any model trained."""

from __future__ import annotations

import pickle

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
    return {"TEXT": text, "EVIL": evil, "RAW": raw, "AFILE": afile, "TWO": two_col,
            "EMPTY": empty}


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
]


@pytest.mark.parametrize("args,expected", CASES, ids=[" ".join(a[:1] + a[-2:]) for a, _ in
                                                       CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(args, expected, tmp_path, capsys,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = _files(tmp_path)
    args = [str(files.get(a, a)) for a in args]
    out = tmp_path / "out"
    if args[0] == "run":
        args += ["--out", str(out)]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("uqbench: error:"), err
    assert "Traceback" not in err
    assert expected.lower() in lines[0].lower(), lines[0]
    assert not out.exists()
    assert not (tmp_path / "pwned").exists()


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
    assert not out.exists()
