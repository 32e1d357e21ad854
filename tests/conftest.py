import os

import pytest


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
