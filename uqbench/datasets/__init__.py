"""Built-in datasets (registered through the ``uqbench.datasets`` entry-point group)."""
