"""The layout of ``DIR/.xnat-downloader/``, owned here and nowhere else::

    DIR/.xnat-downloader/
        state.sqlite, lock          a run's resume state and its lock     } a state folder
        manifest.json, .xml         the last plan                         }
        sync.json                   what the last walk found, per session }
        reports/run-*.jsonl         one report per run                    }
        shards/K-of-N/              a shard's own state folder (the same files)
        logs/run-*.log              every run's debug log (runs and shards alike)
        slurm/                      array.sbatch, array.json, manifest.json, netrc, logs/
        xget/                       xget's staging, until its zips are written

Everything else asks this module for a path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xnat_downloader.plan.shard import Shard

ROOT = ".xnat-downloader"
SHARDS = "shards"


def root(outdir: Path) -> Path:
    return outdir / ROOT


@dataclass(frozen=True)
class StateFolder:
    """Where one run (or one shard) keeps its state, lock, plan, sync record and reports."""

    path: Path

    @property
    def database(self) -> Path:
        return self.path / "state.sqlite"

    @property
    def lock(self) -> Path:
        return self.path / "lock"

    @property
    def manifest_json(self) -> Path:
        return self.path / "manifest.json"

    @property
    def manifest_xml(self) -> Path:
        return self.path / "manifest.xml"

    @property
    def sync(self) -> Path:
        return self.path / "sync.json"

    @property
    def reports(self) -> Path:
        return self.path / "reports"

    def report_files(self) -> list[Path]:
        """This folder's reports, oldest first."""
        found = self.reports.glob("run-*.jsonl") if self.reports.is_dir() else []
        return sorted(found, key=lambda p: p.stat().st_mtime)


def state_folder(outdir: Path, shard: Shard | None = None) -> StateFolder:
    """A download's state folder: ``.xnat-downloader`` itself, or a shard's
    ``.xnat-downloader/shards/K-of-N`` (each shard has its own state and lock, so shards
    can share one output tree)."""
    base = root(outdir)
    return StateFolder(base if shard is None else base / SHARDS / shard.folder)


def shard_folders(outdir: Path) -> list[StateFolder]:
    """Every shard's state folder under ``outdir``, by name."""
    base = root(outdir) / SHARDS
    return [StateFolder(p) for p in sorted(base.glob("*-of-*"))] if base.is_dir() else []


def logs(outdir: Path) -> Path:
    return root(outdir) / "logs"


def slurm(outdir: Path) -> Path:
    return root(outdir) / "slurm"


XGET_STAGING = f"{ROOT}/xget"  # relative to DIR: planned paths of files bound for a zip


def xget_staging(outdir: Path) -> Path:
    return outdir / XGET_STAGING
