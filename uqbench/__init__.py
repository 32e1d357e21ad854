"""uqbench: benchmark uncertainty quantification of machine-learning interatomic potentials.

Front doors: `load_dataset`, `create_method`, `Prediction`, `UQMethod`, `Dataset`; for
writing a method on a backbone, `TorchUQMethod` (and `WarmStarted` for a two-stage one),
`energy_and_forces` and `GraphBatch`
(imported, with torch, when first used). Importing uqbench does not import torch.
"""

from uqbench.calculator import UQCalculator
from uqbench.dataset import Dataset
from uqbench.errors import UQBenchError
from uqbench.method import UQMethod
from uqbench.prediction import Prediction
from uqbench.registry import create_method, load_dataset

__version__ = "0.1.0"
__all__ = ["BackboneWrapper", "Dataset", "GraphBatch", "Prediction", "TorchUQMethod",
           "UQBenchError",
           "UQCalculator", "UQMethod", "WarmStarted", "create_method", "energy_and_forces",
           "load_dataset"]

_LAZY = {"TorchUQMethod": "uqbench.strategies.base",
         "WarmStarted": "uqbench.strategies.base",
         "BackboneWrapper": "uqbench.backbones.adapter",
         "energy_and_forces": "uqbench.backbones.adapter",
         "GraphBatch": "uqbench.backbones.graph"}


def __getattr__(name: str):
    """The torch-based public API, imported when first asked for."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'uqbench' has no attribute {name!r}")
