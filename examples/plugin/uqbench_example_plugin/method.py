"""The example plugin's parametric method, on uqbench's documented base class."""

from __future__ import annotations

from uqbench import TorchUQMethod, energy_and_forces


class ResidualGaussian(TorchUQMethod):
    """The deterministic backbone with one Gaussian width per target from its residuals."""

    parametric = True

    def __init__(self, min_std: float = 1e-6, **kwargs) -> None:
        super().__init__(**kwargs)
        self.min_std = min_std

    def fit(self, train_set, val=None):
        super().fit(train_set, val)  # the backbone, trained with the MSE loss
        e_sq, f_sq, n_e, n_f = 0.0, 0.0, 0, 0
        for batch in self.batches(val or train_set):
            e, f = (x.detach() for x in energy_and_forces(self.models_[0], batch)[:2])
            e_err = (e - batch.energy) / batch.n_atoms
            f_err = f - batch.forces
            e_err, f_err = e_err[e_err.isfinite()], f_err[f_err.isfinite()]  # labels present
            e_sq, n_e = e_sq + float((e_err**2).sum()), n_e + e_err.numel()
            f_sq, n_f = f_sq + float((f_err**2).sum()), n_f + f_err.numel()
        self.energy_std_ = max((e_sq / max(n_e, 1)) ** 0.5, self.min_std)
        self.forces_std_ = max((f_sq / max(n_f, 1)) ** 0.5, self.min_std)
        return self

    def predict_gaussian(self, batch):
        e, f = energy_and_forces(self.models_[0], batch)[:2]
        n = batch.n_atoms.to(e.dtype)
        return (e, self.energy_std_ * n, f, f.new_full(f.shape, self.forces_std_))


