"""``silica``: the SCAN-DFT silica database of Erhard, Rohrer, Albe and Deringer (npj
Comput. Mater. 8, 90, 2022; CC BY 4.0), Zenodo record 6353684, read from its published
extxyz file ``sio2_potential_data/database/dataset.scan.2.xyz`` and split by
``config_type``.

`fetch_silica` downloads the record's zip when a network is there, checks it against the
MD5 checksum the Zenodo API publishes for it, and keeps the extxyz file (and its SHA-256)
in the cache; ``data_path`` reads a local copy instead.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

from uqbench.cache import cache_dir
from uqbench.dataset import Dataset
from uqbench.datasets.extxyz import assign_splits, read_labelled
from uqbench.errors import UQBenchError

RECORD = "6353684"
API_URL = f"https://zenodo.org/api/records/{RECORD}"
ZIP_NAME = "sio2_potential_data.zip"
ZIP_URL = f"https://zenodo.org/records/{RECORD}/files/{ZIP_NAME}?download=1"
MEMBER = "sio2_potential_data/database/dataset.scan.2.xyz"
# ID: bulk crystalline and amorphous; OOD: the liquid, the melt-quench trajectories, clusters.
SPLIT_MAP = {"bulk_cryst": "id", "bulk_amo": "id", "liquid": "ood-liquid",
             "quench": "ood-quench", "cluster": "ood-cluster"}
HOW = ("the silica (GAP-22 SCAN) data is not here: run `uqbench datasets fetch silica` "
       "where there is a network, or pass --data-path FILE (dataset.scan.2.xyz from Zenodo "
       f"record {RECORD})")


def cached_path() -> Path:
    return cache_dir() / "silica" / "dataset.scan.2.xyz"


def fetch_silica(api_url: str = API_URL, zip_url: str = ZIP_URL, timeout: float = 60.0) -> Path:
    """Download, verify (MD5 from the Zenodo API) and cache the SCAN silica extxyz file."""
    try:
        with urllib.request.urlopen(api_url, timeout=timeout) as response:
            meta = json.load(response)
        files = {f["key"]: f for f in meta.get("files", [])}
        checksum = files[ZIP_NAME]["checksum"]
        with urllib.request.urlopen(zip_url, timeout=timeout) as response:
            blob = response.read()
    except KeyError:
        raise UQBenchError(f"Zenodo record {RECORD} lists no {ZIP_NAME}") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UQBenchError(f"cannot download the silica data ({reason}); {HOW}") from None
    algorithm, _, expected = checksum.partition(":")
    if hashlib.new(algorithm, blob).hexdigest() != expected:
        raise UQBenchError(f"{ZIP_NAME}: {algorithm} checksum mismatch; nothing was kept")
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        data = archive.read(MEMBER)
    dest = cached_path()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, dest)
    (dest.parent / "provenance.json").write_text(json.dumps({
        "record": RECORD, "zip": ZIP_NAME, "zip_checksum": checksum, "member": MEMBER,
        "sha256": hashlib.sha256(data).hexdigest()}, indent=2))
    return dest


#: 1 eV/Å^3 in kilobar.
EV_PER_A3_IN_KBAR = 1602.1766


def stress_from_virials(frames) -> dict[str, int]:
    """Stress labels of known units only: ``stress = -virials / V`` (eV/Å^3, ASE's sign)
    from GAP's ``virials`` (eV), the fitting label of this file; its ``stress`` field,
    whose units public ingest notes give as kilobar (some frames with 6 values, some as a
    per-atom column), is never trained on, only compared with that and counted. Frames
    without ``virials`` (or not periodic) carry no stress label. Returns the counts."""
    counts = {"from_virials": 0, "agrees": 0, "kbar": 0, "sign_flipped": 0,
              "kbar_sign_flipped": 0, "unclear": 0, "no_stress_field": 0, "no_virials": 0}
    for atoms in frames:
        field = atoms.info.pop("stress", None)
        atoms.arrays.pop("stress", None)  # a per-atom column: no known meaning here
        virial = atoms.info.get("virials", atoms.info.get("virial"))
        if virial is None or not atoms.pbc.all():
            counts["no_virials"] += 1
            continue
        stress = -np.reshape(np.asarray(virial, dtype=float), (3, 3)) / atoms.get_volume()
        atoms.info["stress"] = stress
        counts["from_virials"] += 1
        if field is None:
            counts["no_stress_field"] += 1
            continue
        counts[_compare(np.asarray(field, dtype=float), stress)] += 1
    return counts


def _compare(field: np.ndarray, stress: np.ndarray) -> str:
    """How a file's 3 x 3 stress field relates to the virial stress."""
    big = np.abs(stress) > 1e-3 * max(np.abs(stress).max(), 1e-12)
    if not big.any():
        return "unclear"
    ratio = float(np.median(field[big] / stress[big]))
    for name, expected in (("agrees", 1.0), ("sign_flipped", -1.0),
                           ("kbar", EV_PER_A3_IN_KBAR), ("kbar_sign_flipped", -EV_PER_A3_IN_KBAR)):
        if abs(ratio - expected) <= 0.02 * abs(expected) and np.allclose(
                field, expected * stress, rtol=0.02, atol=0.02 * np.abs(expected * stress).max()):
            return name
    return "unclear"


def load_silica(data_path: str | None = None, train_size: int | None = None, seed: int = 0,
                quick: bool = False) -> Dataset:
    """SCAN silica (GAP-22 database): ID ``train``/``val``/``test`` from bulk crystalline
    and amorphous cells (seeded 80/10/10), OOD ``ood-liquid``, ``ood-quench``,
    ``ood-cluster`` by ``config_type``. Needs the file: ``data_path`` or a fetched copy."""
    path = Path(data_path) if data_path else cached_path()
    if not path.is_file():
        if data_path:
            raise UQBenchError(f"no such data file {str(path)!r}")
        raise UQBenchError(HOW)
    frames = read_labelled(path, virial_stress=False)
    counts = stress_from_virials(frames)
    flipped = counts["sign_flipped"] + counts["kbar_sign_flipped"]
    print(f"uqbench: note: silica stress = -virials/V (eV/Å^3) on {counts['from_virials']} "
          f"frames; the file's stress field agrees on {counts['agrees']}, is kilobar on "
          f"{counts['kbar']}, sign-flipped on {flipped}, unclear on {counts['unclear']} "
          f"(never trained on); {counts['no_virials']} frames without virials train without "
          "stress", file=sys.stderr)
    splits = assign_splits(frames, "config_type", SPLIT_MAP, train_size, seed,
                           source=f"{path.name}: ")
    if quick and train_size is None:
        splits["train"] = splits["train"][:100]
    return Dataset("silica", splits, options={"data_path": str(path),
                                              "train_size": train_size, "seed": seed,
                                              "stress_labels": counts})


load_silica.summary = ("SCAN-DFT silica of Erhard et al. 2022 (GAP-22 data; fetch or "
                       "--data-path); ood-liquid, ood-quench, ood-cluster")
