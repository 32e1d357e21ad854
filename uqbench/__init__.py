"""uqbench: benchmark uncertainty quantification of machine-learning interatomic potentials.

Front doors: `load_dataset`, `create_method`, `Prediction`, `UQMethod`, `Dataset`.
Importing uqbench does not import torch.
"""

from uqbench.calculator import UQCalculator
from uqbench.dataset import Dataset
from uqbench.errors import UQBenchError
from uqbench.method import UQMethod
from uqbench.prediction import Prediction
from uqbench.registry import create_method, load_dataset

__version__ = "0.1.0"
__all__ = ["Dataset", "Prediction", "UQBenchError", "UQCalculator", "UQMethod",
           "create_method", "load_dataset"]
