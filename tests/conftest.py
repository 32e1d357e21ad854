import importlib.util
import os

import pytest

#: Optional packages whose tests skip where they are missing, but must run in CI:
#: ``UQBENCH_REQUIRE_OPTIONAL=1`` (set by `.ci/run`) turns a missing one into a failure.
OPTIONAL = ("chgnet", "orb_models", "uncertainty_toolbox", "matscipy", "scoringrules")


def pytest_sessionstart(session):
    if os.environ.get("UQBENCH_REQUIRE_OPTIONAL") == "1":
        missing = [m for m in OPTIONAL if importlib.util.find_spec(m) is None]
        if missing:
            raise pytest.UsageError(
                f"UQBENCH_REQUIRE_OPTIONAL=1 but {', '.join(missing)} cannot be imported: "
                "their tests would be skipped silently")


try:  # the same examples on every run in CI: a failure there is reproducible
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
    if os.environ.get("CI"):
        settings.load_profile("ci")
except ImportError:
    pass


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Generated datasets go to a temporary cache, never the user's."""
    os.environ["UQBENCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.setdefault("TQDM_DISABLE", "1")
    yield


@pytest.fixture(scope="session")
def tiny_nbody():
    from uqbench import load_dataset

    return load_dataset("nbody", train_size=40, val_size=20, test_size=20, ood_size=20)


@pytest.fixture(scope="session")
def numerical_stress():
    """``numerical_stress(energy, atoms)``: (1/V) dE/d(strain), 3 x 3, of any energy function
    of ``Atoms``, by ASE's central finite strains."""
    from ase.calculators.calculator import Calculator, all_changes
    from ase.calculators.fd import calculate_numerical_stress

    class EnergyOf(Calculator):
        implemented_properties = ["energy", "free_energy"]

        def __init__(self, energy) -> None:
            super().__init__()
            self._energy = energy

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            e = float(self._energy(self.atoms))
            self.results = {"energy": e, "free_energy": e}

    def compute(energy, atoms, eps: float = 1e-5):
        probe = atoms.copy()
        probe.calc = EnergyOf(energy)
        return calculate_numerical_stress(probe, eps=eps, voigt=False)

    return compute
