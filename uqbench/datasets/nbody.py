"""Charged N-body particles (EGNN / NRI charged-particle simulation) with Coulomb labels.

Configurations come from the NRI simulator as used by EGNN (Satorras et al. 2021): charges
+-1 with equal probability, positions N(0, sigma^2) with sigma = (n/5)^(1/3), speed 0.5 in a
random direction, kick-drift leapfrog with dt = 0.001, the simulator clipping each force
component at +-100 for its own dynamics. Labels are exact and unclipped:
E = sum_{i<j} q_i q_j / r_ij and F = -grad E (uqbench treats the units as eV and Å).

Each trajectory has its own seed, so a split of size N is the first N accepted frames of a
fixed sequence: training sets are nested across sizes, and the test and OOD splits do not
depend on the training size. Every frame carries ``atoms.info["trajectory"]`` (pool and
index): splits never share a trajectory.

Charge mixes are stratified: since E and F do not change when every charge flips sign, a
mix is the size m of the minority sign (5 particles: m = 0, 1, 2 with probabilities 1/16,
5/16, 10/16). Trajectory k of a pool takes its m from a fixed cycle holding each m in
exactly those proportions, each m once at the start, so the smallest training set (100
frames, about 10 trajectories) already holds every mix the test set has; which particles
and which sign form the minority stay random.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from uqbench.cache import cache_dir, cached_splits, content_hash
from uqbench.dataset import Dataset, check_sizes
from uqbench.progress import Progress

GENERATOR_VERSION = 2
DT = 1e-3
N_STEPS = 5000
FRAME_EVERY = 500  # steps between saved frames: 10 frames per trajectory
MAX_F = 0.1 / DT  # the simulator's per-component force clip
R_CLOSE = 0.25  # Å: ID frames keep every pair at least this far apart; ood-close is below it
R_FLOOR = 0.1  # Å: ood-close stops here, so a handful of near-collisions cannot dominate

POOLS = {"train": 0, "val": 1, "test": 2, "ood-n": 3, "ood-close": 4}


def coulomb(positions: np.ndarray, charges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Energy [...] and forces [..., n, 3] of point charges; batched over leading axes."""
    diff = positions[..., :, None, :] - positions[..., None, :, :]
    r = np.sqrt((diff**2).sum(-1))
    n = positions.shape[-2]
    eye = np.eye(n, dtype=bool)
    qq = charges[..., :, None] * charges[..., None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_r = np.where(eye, 0.0, 1.0 / np.where(eye, 1.0, r))
    energy = 0.5 * (qq * inv_r).sum((-1, -2))
    forces = ((qq * inv_r**3)[..., None] * diff).sum(-2)
    return energy, forces


def mix_cycle(n_particles: int) -> np.ndarray:
    """Minority-sign counts m in the binomial proportions of random +-1 charges (sign
    flips identified), one of each m first, then the rest in a fixed shuffled order."""
    from math import comb

    counts = [comb(n_particles, m) // (2 if 2 * m == n_particles else 1)
              for m in range(n_particles // 2 + 1)]
    rest = np.concatenate([np.full(c - 1, m) for m, c in enumerate(counts)]).astype(int)
    np.random.default_rng(12345).shuffle(rest)
    return np.concatenate([np.arange(len(counts)), rest])


def draw_charges(rng: np.random.Generator, n_particles: int, minority: int) -> np.ndarray:
    """+-1 charges with ``minority`` of one random sign, on random particles."""
    sign = rng.choice([-1.0, 1.0])
    charges = np.full(n_particles, sign)
    charges[rng.choice(n_particles, size=minority, replace=False)] = -sign
    return charges


def simulate(seeds: list[np.random.SeedSequence], n_particles: int,
             minorities: list[int] | None = None) -> tuple[np.ndarray, ...]:
    """Run one trajectory per seed (vectorised); frames ``[n_traj, n_frames, n, 3]``, charges.

    ``minorities`` fixes each trajectory's minority-sign count (else charges are drawn
    independently, +-1 with equal probability)."""
    n_traj = len(seeds)
    pos = np.empty((n_traj, n_particles, 3))
    vel = np.empty((n_traj, n_particles, 3))
    charges = np.empty((n_traj, n_particles))
    sigma = (n_particles / 5.0) ** (1.0 / 3.0)
    for k, ss in enumerate(seeds):
        rng = np.random.default_rng(ss)
        if minorities is None:
            charges[k] = rng.choice([-1.0, 1.0], size=n_particles)
        else:
            charges[k] = draw_charges(rng, n_particles, minorities[k])
        pos[k] = rng.normal(scale=sigma, size=(n_particles, 3))
        v = rng.normal(size=(n_particles, 3))
        vel[k] = 0.5 * v / np.linalg.norm(v, axis=1, keepdims=True)

    qq = charges[:, :, None] * charges[:, None, :]
    diagonal = np.eye(n_particles, dtype=bool)

    def clipped_force(p: np.ndarray) -> np.ndarray:
        # Same physics as `coulomb`, arranged for speed: no reductions over tiny axes.
        x, y, z = p[..., 0], p[..., 1], p[..., 2]
        dx = x[:, :, None] - x[:, None, :]
        dy = y[:, :, None] - y[:, None, :]
        dz = z[:, :, None] - z[:, None, :]
        r2 = dx * dx + dy * dy + dz * dz
        r2[:, diagonal] = np.inf
        f = qq / (r2 * np.sqrt(r2))
        force = p * f.sum(-1)[..., None] - f @ p
        return np.clip(force, -MAX_F, MAX_F, out=force)

    frames = []
    vel += DT * clipped_force(pos)
    for step in range(1, N_STEPS + 1):
        pos += DT * vel
        if step % FRAME_EVERY == 0:
            frames.append(pos.copy())
        vel += DT * clipped_force(pos)
    return np.stack(frames, axis=1), charges


def min_distance(positions: np.ndarray) -> np.ndarray:
    diff = positions[..., :, None, :] - positions[..., None, :, :]
    r = np.sqrt((diff**2).sum(-1))
    n = positions.shape[-2]
    r[..., np.arange(n), np.arange(n)] = np.inf
    return r.min(axis=(-1, -2))


def _to_atoms(positions: np.ndarray, charges: np.ndarray, trajectory: str) -> Atoms:
    energy, forces = coulomb(positions, charges)
    atoms = Atoms(symbols=["X"] * len(charges), positions=positions, pbc=False)
    atoms.set_initial_charges(charges)
    atoms.info["trajectory"] = trajectory
    atoms.info["energy"] = float(energy)
    atoms.arrays["forces"] = forces
    return atoms


def generate_split(
    seed: int, pool: str, size: int, n_particles: int, accept, progress=None
) -> list[Atoms]:
    """The first ``size`` accepted frames of pool ``pool``'s trajectory sequence."""
    out: list[Atoms] = []
    next_traj = 0
    cycle = mix_cycle(n_particles)
    # Trajectories are seeded one by one, so the block size changes speed, never the data.
    per_block = -(-size // (N_STEPS // FRAME_EVERY)) + 8
    while len(out) < size:
        seeds = [np.random.SeedSequence([seed, POOLS[pool], next_traj + k])
                 for k in range(per_block)]
        minorities = [int(cycle[(next_traj + k) % len(cycle)]) for k in range(per_block)]
        frames, charges = simulate(seeds, n_particles, minorities)
        r_min = min_distance(frames)
        for k, t in zip(*np.nonzero(accept(r_min)), strict=True):
            if len(out) == size:
                break
            out.append(_to_atoms(frames[k, t], charges[k], f"{pool}-{next_traj + k}"))
            if progress is not None:
                progress.update(1)
        next_traj += per_block
        per_block = min(4096, 2 * per_block)
        if next_traj > 1_000_000:
            raise RuntimeError(f"nbody: could not fill split {pool!r}")
    return out


def load_nbody(
    train_size: int | None = None,
    val_size: int | None = None,
    test_size: int = 500,
    ood_size: int = 500,
    n_particles: int = 5,
    ood_n_particles: int = 10,
    seed: int = 0,
    quick: bool = False,
    use_cache: bool = True,
) -> Dataset:
    """Charged N-body dataset: ``train``/``val``/``test`` (ID), ``ood-n``, ``ood-close``.

    Each OOD split shifts one thing: ``ood-n`` the particle count (10 instead of 5; the ID
    floor on pair distances, 0.25 Å, still holds), ``ood-close`` the closest approach (5
    particles with a pair between 0.1 and 0.25 Å apart, hence large |E| and |F|). ID
    frames have 5 particles and no pair closer than 0.25 Å. The training size defaults to
    1000; the validation set is 300 frames (30 trajectories) whatever the training size,
    so early stopping and model selection mean the same at every size; ``quick`` makes the
    training set 200 and shrinks val to 100 and test and OOD splits to 200 for smoke runs.
    """
    if train_size is None:
        train_size = 200 if quick else 1000
    if quick:
        test_size, ood_size = min(test_size, 200), min(ood_size, 200)
    check_sizes("nbody", train_size=train_size, test_size=test_size, ood_size=ood_size)
    if val_size is None:
        val_size = 100 if quick else 300
    options = dict(train_size=train_size, val_size=val_size, test_size=test_size,
                   ood_size=ood_size, n_particles=n_particles,
                   ood_n_particles=ood_n_particles, seed=seed)
    key = content_hash({"dataset": "nbody", "version": GENERATOR_VERSION, **options,
                        "r_close": R_CLOSE, "r_floor": R_FLOOR, "frame_every": FRAME_EVERY})
    path = cache_dir() / "nbody" / f"nbody-{key}.npz"

    def simulate_all() -> dict[str, list[Atoms]]:
        def far(r):
            return r >= R_CLOSE

        def close(r):
            return (r >= R_FLOOR) & (r < R_CLOSE)

        plan = [("train", train_size, n_particles, far), ("val", val_size, n_particles, far),
                ("test", test_size, n_particles, far),
                ("ood-n", ood_size, ood_n_particles, far),
                ("ood-close", ood_size, n_particles, close)]
        total = sum(p[1] for p in plan)
        with Progress(total, "nbody: simulating", unit="frame") as bar:
            return {name: generate_split(seed, name, size, n, accept, bar)
                    for name, size, n, accept in plan}

    splits = cached_splits(path, use_cache, simulate_all)
    return Dataset("nbody", splits, options=options, description=load_nbody.__doc__ or "")


load_nbody.summary = ("Charged particles (+-1) under Coulomb's law, NRI/EGNN simulator; "
                      "ID test, ood-n (10 particles), ood-close (close pairs)")
