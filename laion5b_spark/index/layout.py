"""Where an index build lives in the lake, and the pointer file that commits it.

``LAKE/index/<name>/`` (``Lake.index_path``) holds ``_index.json`` - the commit: it names the build folder's
files that readers use - and one folder per build: ``embeddings/part-N.npy`` + ``ids/part-N.parquet`` (the
export), ``_exported/part-N.json`` (a part's receipt, written last), ``knn-<run>.index`` and its infos. Index
files carry the run that built them, so a rebuild never overwrites the file a committed pointer names.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass

from ..lake import FileEntry, Lake, LakeError

MODALITIES = ("image", "text")
POINTER = "_index.json"
POINTER_FORMAT = 1


@dataclass(frozen=True)
class Part:
    """One scored file -> one export part per modality."""

    number: int
    scored_path: str  # relative to the scored table
    images_path: str  # the images file it scored (the scored unit's key)
    rows: int
    width: int = 6  # digits of the part number: names must sort as numbers (autofaiss numbers files in name order)
    images_file: str = ""  # where that file's rows are now (its compacted file once compact ran; "" = images_path)

    @property
    def name(self) -> str:
        return f"part-{self.number:0{self.width}d}"


def parts_of(entries: list[FileEntry], images_files: dict[str, str] | None = None) -> list[Part]:
    """The parts of ``scored``'s manifest entries, numbered in path order. ``images_files``: images'
    ``Table.current_files()``, for where each scored file's images rows are read now."""
    entries = sorted(entries, key=lambda e: e.path)
    width = max(6, len(str(max(len(entries) - 1, 0))))
    parts = []
    for i, e in enumerate(entries):
        scored_from = e.covers.get("images_path", e.key)
        parts.append(Part(i, e.path, scored_from, e.rows, width, (images_files or {}).get(scored_from, "")))
    return parts


class BuildLayout:
    def __init__(self, lake: Lake, build: str):
        self.lake, self.build = lake, build

    def root(self, name: str) -> str:
        return self.lake.index_path(name, self.build)

    def embeddings_dir(self, name: str) -> str:
        return self.lake.index_path(name, self.build, "embeddings")

    def embeddings(self, name: str, part: str) -> str:
        return self.lake.index_path(name, self.build, "embeddings", f"{part}.npy")

    def ids_dir(self, name: str) -> str:
        return self.lake.index_path(name, self.build, "ids")

    def ids(self, name: str, part: str) -> str:
        return self.lake.index_path(name, self.build, "ids", f"{part}.parquet")

    def receipt(self, name: str, part: Part) -> str:
        """Written after the part's files of this modality (each written whole): that part is exported."""
        return self.lake.index_path(name, self.build, "_exported", f"{part.name}.json")

    def exported(self, name: str) -> set[str]:
        """Names of the parts of this modality that are exported: one listing, not one request per part."""
        folder = self.lake.index_path(name, self.build, "_exported")
        try:
            found = self.lake.fs.ls(folder, detail=False)
        except FileNotFoundError:
            return set()
        return {posixpath.basename(p)[:-5] for p in found if p.endswith(".json")}

    def index_file(self, name: str, run_id: str) -> str:
        return self.lake.index_path(name, self.build, f"knn-{run_id}.index")

    def infos_file(self, name: str, run_id: str) -> str:
        return self.lake.index_path(name, self.build, f"knn-{run_id}.infos.json")

    def index_files(self, name: str) -> list[str]:
        """Every index file (and its infos) of this build, from any run."""
        return self.lake.glob(self.lake.index_path(name, self.build, "knn-*"))

    def remove_other_runs(self, name: str, run_id: str) -> None:
        """Index files of this build from earlier runs (a rebuild with other settings): the pointer names this run's."""
        keep = {self.index_file(name, run_id), self.infos_file(name, run_id)}
        for path in self.index_files(name):
            if path not in keep:
                self.lake.rm(path)

    def autofaiss_shards(self, name: str) -> str:
        """Where autofaiss's distributed build (index.distributed = "pyspark") writes its index shards."""
        return self.lake.index_path(name, self.build, "_autofaiss_tmp")


def builds(lake: Lake, name: str) -> list[str]:
    """The build folders of index ``name`` (committed or not)."""
    return [posixpath.basename(p.rstrip("/")) for p in lake.listdir(lake.index_path(name))
            if not posixpath.basename(p.rstrip("/")).startswith("_") and lake.fs.isdir(p)]


def remove_build(lake: Lake, name: str, build: str) -> None:
    lake.rm(lake.index_path(name, build), recursive=True)


def read_pointer(lake: Lake, name: str) -> dict | None:
    """The committed build of index ``name`` (``LAKE/index/<name>/_index.json``), or None."""
    p = lake.read_json(lake.index_path(name, POINTER))
    if p is not None and p.get("format") != POINTER_FORMAT:
        raise LakeError(f"{lake.index_path(name, POINTER)} is not a laion5b-spark index pointer")
    return p


def write_pointer(lake: Lake, name: str, pointer: dict) -> None:
    lake.write_json(lake.index_path(name, POINTER), dict(pointer, format=POINTER_FORMAT, name=name))


def open_knn(lake: Lake, path: str, index_param: str | None, threads: int | None = None):
    """A committed index file loaded (copied down first from an object store; faiss reads it whole, so the
    copy goes at once), with its tuned search parameters applied."""
    import faiss

    from .build import load

    if threads:
        faiss.omp_set_num_threads(threads)  # a task owns its cores, not the machine's
    local, temporary = lake.local_copy(path, ".index")
    try:
        return load(local, index_param)
    finally:
        if temporary:
            os.remove(local)
