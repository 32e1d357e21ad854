"""UQ strategies, each written once and applied to any backbone through its adapter."""
