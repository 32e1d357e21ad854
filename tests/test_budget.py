"""Fair by default: every method of a backbone has the same default budget of optimiser
steps per model over all its stages, spends it, and a comparison of unequal budgets is
refused."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import uqbench
from uqbench import registry
from uqbench.cards import CARDS_DIR, read_card
from uqbench.errors import UQBenchError
from uqbench.report.compare import relative_improvement

CARDS = sorted(p.stem for p in CARDS_DIR.glob("*.yaml"))
EGNN_METHODS = sorted(k for k in CARDS if read_card(k)["backbone"] == "egnn")


def test_every_card_of_a_backbone_has_one_default_budget_in_steps():
    by_backbone: dict[str, set] = {}
    quick: dict[str, set] = {}
    for key in CARDS:
        card = read_card(key)
        hp = card["hyperparameters"]
        assert hp["max_epochs"] is None, key  # epochs only when asked for
        assert hp["patience"] is None, key  # no early stopping: every step is spent
        assert "finetune_epochs" not in hp, key  # stages are fractions of the budget
        by_backbone.setdefault(card["backbone"], set()).add(hp["max_steps"])
        quick.setdefault(card["backbone"], set()).add(card["quick"].get("max_steps"))
        assert not {"max_epochs", "patience"} & set(card["quick"]), key
    assert by_backbone == {"egnn": {2000}, "chgnet": {500}, "orb": {500}}
    assert quick == {"egnn": {100}, "chgnet": {2}, "orb": {2}}


def _tiny(tiny_nbody):
    return tiny_nbody.splits["train"][:24], tiny_nbody.splits["val"][:8]


SMALL = {"backbone_options": {"hidden": 8, "n_layers": 1}, "batch_size": 8,
         "device": "cpu", "n_members": 2, "n_heads": 2}


@pytest.mark.parametrize("budget", [{"max_steps": 7}, {"max_epochs": 2}])
def test_every_egnn_method_spends_the_same_steps(tiny_nbody, budget):
    """7 steps, or 2 epochs of 24 structures at batch 8 (6 steps), whatever the stages."""
    train, val = _tiny(tiny_nbody)
    expected = budget.get("max_steps") or 6
    spent = {}
    for key in EGNN_METHODS:
        method = uqbench.create_method(key)
        params = method.get_params()
        method.set_params(**{k: v for k, v in {**SMALL, **budget}.items() if k in params})
        method.fit(train, val)
        spent[key] = set(method.budget_["steps_per_model"])
        assert method.budget_["budget_steps"] == expected
    assert spent == {key: {expected} for key in EGNN_METHODS}


def test_registered_methods_are_the_cards():
    # a card without a registered entry point would escape the budget test above
    assert set(EGNN_METHODS) <= set(registry.entries("method"))


def _frame(steps_a, steps_b):
    rows = []
    for method, steps, value in (("a", steps_a, 1.0), ("b", steps_b, 2.0)):
        for seed in range(3):
            rows.append({"dataset": "toy", "method": method, "train_size": 10,
                         "split": "test", "target": "forces", "seed": seed,
                         "metric": "rmse", "value": value + 0.1 * seed, "quick": False,
                         "collapsed": False, "threads": 1, "direction": "lower",
                         "steps_per_model": steps})
    return pd.DataFrame(rows)


def test_compare_refuses_unequal_budgets_with_both_named():
    with pytest.raises(UQBenchError, match=r"'a' spent 280 .* 'b' 1330") as info:
        relative_improvement(_frame(280, 1330), "a", "b", "rmse")
    assert "\n" not in str(info.value) and "--allow-unequal-budgets" in str(info.value)
    table = relative_improvement(_frame(280, 1330), "a", "b", "rmse",
                                 allow_unequal_budgets=True)
    assert len(table) == 1
    assert len(relative_improvement(_frame(280, 280), "a", "b", "rmse")) == 1
    with pytest.raises(UQBenchError, match="unknown"):
        relative_improvement(_frame(280, None), "a", "b", "rmse")


def test_compare_interval_is_the_paired_t_interval():
    from scipy import stats

    frame = _frame(10, 10)
    frame.loc[frame["method"] == "a", "value"] = [1.0, 1.1, 0.9]
    frame.loc[frame["method"] == "b", "value"] = [2.0, 2.0, 2.0]
    row = relative_improvement(frame, "a", "b", "rmse").iloc[0]
    imp = pd.Series([50.0, 45.0, 55.0])
    half = stats.t.ppf(0.975, 2) * imp.std() / 3**0.5
    assert row["improvement_pct_ci_low"] == pytest.approx(50 - half)
    assert row["improvement_pct_ci_high"] == pytest.approx(50 + half)
    assert row["verdict"] == "better" and row["n_seeds"] == 3
    frame.loc[frame["method"] == "a", "value"] = [1.0, 2.5, 2.4]  # +50 %, -25 %, -20 %
    assert relative_improvement(frame, "a", "b", "rmse").iloc[0]["verdict"] == "not resolved"


def test_cli_compare_refuses_unequal_budgets(tmp_path, capsys):
    from uqbench.cli import main

    template = json.loads(sorted((CARDS_DIR.parent.parent / "leaderboard" / "superseded" /
                                  "protocol-v1" / "nbody" / "egnn").glob("n100-seed0-*.json")
                                 )[0].read_text())
    for method, steps in (("egnn", 280), ("p-egnn", 1330)):
        rec = json.loads(json.dumps(template))
        rec["method"]["key"] = rec["config"]["method"] = method
        rec["run_id"] = f"{method}-x"
        rec["budget"]["steps_per_model"] = [steps]
        path = tmp_path / "nbody" / method / "r.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(rec))
    assert main(["compare", "--results", str(tmp_path), "-m", "p-egnn", "-b", "egnn",
                 "--metric", "rmse"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1330" in err[0] and "280" in err[0]
    assert main(["compare", "--results", str(tmp_path), "-m", "p-egnn", "-b", "egnn",
                 "--metric", "rmse", "--allow-unequal-budgets"]) == 0
