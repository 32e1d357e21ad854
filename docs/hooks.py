"""MkDocs hook: publish the figures and web pages the docs link to from `leaderboard/`
(outside `docs/`), so the site shows them without a copy kept in `docs/`."""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
SHARED = ("leaderboard",)  # folders beside docs/ whose figures and pages the docs show
KINDS = {".png", ".html", ".csv"}


def on_files(files: Files, config) -> Files:
    for folder in SHARED:
        for path in sorted((ROOT / folder).rglob("*")):
            skip = {"records", "archive"} & set(path.parts)  # data, not pages
            if path.suffix in KINDS and not skip and path.is_file():
                files.append(File(str(path.relative_to(ROOT)), src_dir=str(ROOT),
                                  dest_dir=config["site_dir"],
                                  use_directory_urls=config["use_directory_urls"]))
    return files
