"""Backbones: deterministic MLIPs that UQ strategies wrap through a `BackboneAdapter`."""
