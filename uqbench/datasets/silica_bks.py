"""``silica-bks``: SiO2 configurations sampled by MD on the BKS ground truth (`bks.py`).

Generated locally and deterministically from a seed. ID: alpha-quartz (72 atoms),
alpha-cristobalite (48 atoms) and melt-quenched amorphous silica (72 atoms) at 300, 900 and
1500 K at their ambient cells. OOD: ``ood-hot`` liquid at 3500 K, ``ood-dense`` quartz and
amorphous compressed to 80 % of their volume (300-1500 K), ``ood-defect`` quartz and
amorphous cells missing one SiO2 unit (a Si and two of its O; neutral), 300-1500 K.

Each trajectory (Langevin NVT, 1 fs) is seeded on its own and gives ``FRAMES`` frames after
``EQUILIBRATION`` steps, one every ``STRIDE`` steps; splits are built from whole
trajectories, so no trajectory is shared between splits. Two amorphous samples are made
(melt at 5000 K, linear quench to 300 K): one for train/val, one for test and OOD.

``silica-bks-small`` is the same protocol on small cells (quartz 9, cristobalite 12,
amorphous 18 atoms), for backbones too costly on a CPU at 48-72 atoms (CHGNet, Orb).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np
from ase import Atoms, units
from ase.build import make_supercell
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary

try:  # ASE >= 3.29; the same draw as MaxwellBoltzmannDistribution, which now warns
    from ase.md.velocitydistribution import thermalize_momenta as thermalize
except ImportError:  # older ASE
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    def thermalize(atoms, temperature_K, rng=None):  # noqa: N803 (ASE's name)
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
from ase.neighborlist import neighbor_list
from ase.spacegroup import crystal

from uqbench.cache import cache_dir, cached_splits, content_hash
from uqbench.dataset import Dataset, check_sizes
from uqbench.datasets.bks import BKSCalculator
from uqbench.errors import UQBenchError
from uqbench.progress import Progress

GENERATOR_VERSION = 2
TIMESTEP = 1.0 * units.fs
FRICTION = 0.02 / units.fs
EQUILIBRATION = 200
STRIDE = 25
FRAMES = 10
ID_TEMPERATURES = (300.0, 900.0, 1500.0)
HOT_TEMPERATURE = 3500.0
MELT_TEMPERATURE = 5000.0
DENSE_VOLUME = 0.8
POOLS = {"train": 0, "val": 1, "test": 2, "ood-hot": 3, "ood-dense": 4, "ood-defect": 5}


def alpha_quartz(small: bool = False) -> Atoms:
    """72-atom orthorhombic alpha-quartz (P3_221, a = 4.916 Å, c = 5.405 Å); ``small``:
    its 9-atom hexagonal cell."""
    cell = crystal(["Si", "O"], basis=[(0.4697, 0.0, 2 / 3), (0.4135, 0.2669, 0.1191 + 2 / 3)],
                   spacegroup=154, cellpar=[4.916, 4.916, 5.405, 90, 90, 120])
    return cell if small else make_supercell(cell, [[2, 0, 0], [1, 2, 0], [0, 0, 2]])


def alpha_cristobalite(small: bool = False) -> Atoms:
    """48-atom alpha-cristobalite (P4_12_12, a = 4.978 Å, c = 6.948 Å), 2 x 2 x 1;
    ``small``: its 12-atom cell."""
    cell = crystal(["Si", "O"], basis=[(0.3003, 0.3003, 0.0), (0.2392, 0.1044, 0.1787)],
                   spacegroup=92, cellpar=[4.978, 4.978, 6.948, 90, 90, 90])
    return cell if small else cell.repeat((2, 2, 1))


def _md(atoms: Atoms, temperature: float, steps: int, rng: np.random.Generator,
        init_velocities: bool = True, observe=None, every: int = 1) -> Atoms:
    atoms.calc = atoms.calc or BKSCalculator()
    if init_velocities:
        thermalize(atoms, temperature, rng=rng)
        Stationary(atoms)
    dyn = Langevin(atoms, TIMESTEP, temperature_K=temperature, friction=FRICTION,
                   fixcm=False, rng=rng)
    if observe is not None:
        dyn.attach(observe, interval=every)
    dyn.run(steps)
    return atoms


def melt_quench(seed_seq: np.random.SeedSequence, melt_steps: int, quench_steps: int,
                small: bool = False) -> Atoms:
    """Amorphous silica: quartz melted at 5000 K, quenched linearly to 300 K (NVT); the
    72-atom cell, or with ``small`` two 9-atom cells stacked along c (18 atoms)."""
    rng = np.random.default_rng(seed_seq)
    atoms = alpha_quartz(small=True).repeat((1, 1, 2)) if small else alpha_quartz()
    atoms.calc = BKSCalculator()
    _md(atoms, MELT_TEMPERATURE, melt_steps, rng)
    chunks = 20
    for k in range(chunks):
        t = MELT_TEMPERATURE + (300.0 - MELT_TEMPERATURE) * (k + 1) / chunks
        _md(atoms, t, max(1, quench_steps // chunks), rng, init_velocities=False)
    atoms.calc = None
    return atoms


def remove_sio2_unit(atoms: Atoms, rng: np.random.Generator) -> Atoms:
    """A neutral vacancy: one Si and its two nearest O removed."""
    si = rng.choice(np.nonzero(atoms.numbers == 14)[0])
    i, j, d = neighbor_list("ijd", atoms, 2.2)
    oxygen = [(dd, jj) for ii, jj, dd in zip(i, j, d, strict=True)
              if ii == si and atoms.numbers[jj] == 8]
    drop = [si] + [jj for _, jj in sorted(oxygen)[:2]]
    keep = np.setdiff1d(np.arange(len(atoms)), drop)
    return atoms[keep]


def _start(pool: str, k: int, glasses: dict[str, Atoms], rng,
           small: bool = False) -> tuple[Atoms, float, str]:
    """The starting cell, temperature and a label for trajectory ``k`` of ``pool``."""
    glass = glasses["train" if pool in ("train", "val") else "test"]
    if pool in ("train", "val", "test"):
        phase = ("quartz", "cristobalite", "amorphous")[k % 3]
        temperature = ID_TEMPERATURES[(k // 3) % 3]
        crystals = {"quartz": alpha_quartz, "cristobalite": alpha_cristobalite}
        atoms = crystals[phase](small) if phase in crystals else glass.copy()
        return atoms, temperature, phase
    temperature = ID_TEMPERATURES[k % 3]
    if pool == "ood-hot":
        return glass.copy(), HOT_TEMPERATURE, "liquid"
    base = alpha_quartz(small) if k % 2 == 0 else glass.copy()
    phase = "quartz" if k % 2 == 0 else "amorphous"
    if pool == "ood-dense":
        base.set_cell(base.cell * DENSE_VOLUME ** (1 / 3), scale_atoms=True)
        return base, temperature, f"{phase}-dense"
    return remove_sio2_unit(base, rng), temperature, f"{phase}-defect"


def trajectory(seed: int, pool: str, k: int, glasses: dict[str, Atoms],
               small: bool = False) -> list[Atoms]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, POOLS[pool], k]))
    atoms, temperature, label = _start(pool, k, glasses, rng, small)
    atoms.calc = BKSCalculator()
    _md(atoms, temperature, EQUILIBRATION, rng)
    frames: list[Atoms] = []

    def keep() -> None:
        if len(frames) < FRAMES:
            frame = Atoms(numbers=atoms.numbers, positions=atoms.positions.copy(),
                          cell=atoms.cell.array.copy(), pbc=True)
            frame.info.update(energy=float(atoms.get_potential_energy()), phase=label,
                              temperature=temperature, trajectory=f"{pool}-{k}")
            frame.arrays["forces"] = atoms.get_forces().copy()
            frames.append(frame)

    _md(atoms, temperature, STRIDE * FRAMES, rng, init_velocities=False, observe=keep,
        every=STRIDE)
    return frames[:FRAMES]


@contextlib.contextmanager
def _main_hidden():
    """Hide the user's ``__main__`` from spawned workers while they start: spawn would
    re-run a script without an ``if __name__ == "__main__":`` guard in every worker (which
    then tries to start its own pool). The work sent to them lives in uqbench, which the
    workers import by name, so they never need the script."""
    import sys

    main = sys.modules.get("__main__")
    saved = {k: getattr(main, k) for k in ("__file__", "__spec__") if hasattr(main, k)}
    try:
        for key in saved:
            if key == "__file__":
                delattr(main, key)
            else:
                setattr(main, key, None)
        yield
    finally:
        for key, value in saved.items():
            setattr(main, key, value)


@contextlib.contextmanager
def _pool(n_jobs: int | None):
    """``run(fn, argument tuples, bar)`` -> results in order, on a process pool when more
    than one job is asked for and this process may have children (a Dask worker may not)."""
    n_jobs = n_jobs or os.cpu_count() or 1
    if n_jobs <= 1 or multiprocessing.current_process().daemon:
        def serial(fn, args, bar):
            out = []
            for a in args:
                out.append(fn(*a))
                bar.update(1)
            return out

        yield serial
        return
    # spawn, not fork: the parent may hold torch's thread pools.
    with ProcessPoolExecutor(n_jobs, mp_context=multiprocessing.get_context("spawn")) as ex:
        def parallel(fn, args, bar):
            with _main_hidden():  # workers start during these submits
                futures = [ex.submit(fn, *a) for a in args]
            for f in as_completed(futures):
                f.result()
                bar.update(1)
            return [f.result() for f in futures]

        yield parallel


def load_silica_bks(
    train_size: int | None = None,
    val_size: int | None = None,
    test_size: int = 120,
    ood_size: int = 60,
    seed: int = 0,
    melt_steps: int | None = None,
    quench_steps: int | None = None,
    quick: bool = False,
    use_cache: bool = True,
    cells: str = "default",
    n_jobs: int | None = None,
) -> Dataset:
    """BKS silica: ID ``train``/``val``/``test`` (quartz, cristobalite, amorphous at
    300-1500 K); OOD ``ood-hot`` (3500 K liquid), ``ood-dense`` (80 % volume),
    ``ood-defect`` (a SiO2 unit missing). Training size defaults to 300 (60 with
    ``quick``, which also shrinks the other splits and the melt-quench); validation is 90
    frames (nine trajectories: each ID phase at each ID temperature) whatever the training
    size. Splits are whole MD runs (``atoms.info["trajectory"]``); ``phase`` and
    ``temperature`` label every frame. ``cells="small"``
    uses 9-18-atom cells (see `load_silica_bks_small`). Trajectories run in ``n_jobs``
    processes (default: one per core); each is seeded on its own, so the data do not depend
    on ``n_jobs``."""
    if cells not in ("default", "small"):
        raise UQBenchError(f"silica-bks: cells must be 'default' or 'small'; got {cells!r}")
    small = cells == "small"
    name = "silica-bks-small" if small else "silica-bks"
    if train_size is None:
        train_size = 60 if quick else 300
    if quick:
        test_size, ood_size = min(test_size, 30), min(ood_size, 20)
    check_sizes(name, train_size=train_size, test_size=test_size, ood_size=ood_size)
    if val_size is None:  # nine trajectories: every ID phase at every ID temperature
        val_size = 30 if quick else 90
    melt = melt_steps if melt_steps is not None else (500 if quick else 2000)
    quench = quench_steps if quench_steps is not None else (1500 if quick else 4000)
    options = dict(train_size=train_size, val_size=val_size, test_size=test_size,
                   ood_size=ood_size, seed=seed, melt_steps=melt, quench_steps=quench)
    if small:  # only when not the default, so the default set keeps its cache key
        options["cells"] = cells
    key = content_hash({"dataset": "silica-bks", "version": GENERATOR_VERSION, **options,
                        "frames": FRAMES, "stride": STRIDE, "equilibration": EQUILIBRATION})
    path = cache_dir() / "silica-bks" / f"{name}-{key}.npz"
    sizes = {"train": train_size, "val": val_size, "test": test_size, "ood-hot": ood_size,
             "ood-dense": ood_size, "ood-defect": ood_size}

    def sample_all() -> dict[str, list[Atoms]]:
        n_traj = {pool: -(-size // FRAMES) for pool, size in sizes.items()}
        with Progress(sum(n_traj.values()) + 2, f"{name}: MD", unit="trajectory") as bar, \
                _pool(n_jobs) as run:
            glasses = dict(zip(("train", "test"), run(
                melt_quench, [(np.random.SeedSequence([seed, stream]), melt, quench, small)
                              for stream in (100, 101)], bar), strict=True))
            jobs = [(pool, k) for pool in sizes for k in range(n_traj[pool])]
            results = run(trajectory, [(seed, pool, k, glasses, small) for pool, k in jobs],
                          bar)
            splits: dict[str, list[Atoms]] = {pool: [] for pool in sizes}
            for (pool, _), frames in zip(jobs, results, strict=True):
                splits[pool] += frames
        return {pool: frames[:sizes[pool]] for pool, frames in splits.items()}

    splits = cached_splits(path, use_cache, sample_all)
    return Dataset(name, splits, options=options,
                   description=load_silica_bks.__doc__ or "")


load_silica_bks.summary = ("SiO2 sampled by MD on BKS (offline): quartz, cristobalite, "
                           "amorphous; ood-hot, ood-dense, ood-defect")


def load_silica_bks_small(
    train_size: int | None = None,
    val_size: int | None = None,
    test_size: int = 60,
    ood_size: int = 30,
    seed: int = 0,
    melt_steps: int | None = None,
    quench_steps: int | None = None,
    quick: bool = False,
    use_cache: bool = True,
    n_jobs: int | None = None,
) -> Dataset:
    """``silica-bks`` on small cells (quartz 9, cristobalite 12, amorphous 18 atoms; OOD
    defects 6 and 15): the same splits and protocol at a cost CPU-bound foundation backbones
    can afford. Training size defaults to 100 (60 with ``quick``)."""
    if train_size is None:
        train_size = 60 if quick else 100
    return load_silica_bks(train_size=train_size, val_size=val_size, test_size=test_size,
                           ood_size=ood_size, seed=seed, melt_steps=melt_steps,
                           quench_steps=quench_steps, quick=quick, use_cache=use_cache,
                           cells="small", n_jobs=n_jobs)


load_silica_bks_small.summary = ("silica-bks on 9-18-atom cells (offline), for CPU-bound "
                                 "foundation backbones")
