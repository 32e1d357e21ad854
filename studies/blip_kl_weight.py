"""Choose BLIP's KL weight (posterior temperature) by validation CRPS on nbody.

Usage: python studies/blip_kl_weight.py [TRAIN_SIZE] [MAX_EPOCHS]
Trains blip-egnn with the nbody study's backbone (hidden 32, 3 layers) for each KL weight
and prints the validation CRPS (energy per atom, force components), NLL and 95 % coverage.
The output of the last run is kept in studies/blip_kl_weight.txt.
"""

import sys

import uqbench
from uqbench.metrics import BUILTIN
from uqbench.scoring import score

train_size = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
max_epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 60
data = uqbench.load_dataset("nbody", train_size=train_size)
print(f"train_size={train_size} max_epochs={max_epochs} (validation split, seed 0)")
for kl_weight in (1.0, 0.1, 0.01, 0.001):
    method = uqbench.create_method(
        "blip-egnn", kl_weight=kl_weight, max_epochs=max_epochs, patience=20, device="cpu",
        backbone_options={"hidden": 32, "n_layers": 3},
    ).fit(data.splits["train"], data.splits["val"])
    pred = method.predict_distribution(data.splits["val"])
    res = score({"val": pred}, {"val": data.splits["val"]}, list(BUILTIN))[0]["val"]
    row = " ".join(f"{t}: crps={res[t]['crps']:.4g} nll={res[t]['nll']:.4g} "
                   f"cov95={res[t]['coverage_95']:.3f}" for t in ("energy", "forces"))
    print(f"kl_weight={kl_weight:g} epochs={method.history_[0]['epochs']} {row}", flush=True)
