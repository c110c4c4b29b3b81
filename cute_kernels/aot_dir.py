"""Reading an ahead-of-time kernel directory: its manifest, lookups, and verification.

A directory built by ``cute-kernels aot`` holds one shared library per compile key and
``manifest.json``: per key its file, arch, DSL version, source fingerprint, sha256 and size, and
the SM count the router kernels were tiled for. A library loads with ``tvm_ffi`` alone.

At run time an entry is used when its key and arch match and its sha256 holds; where the DSL is
installed its fingerprint must also match the installed sources of its family. Without the DSL
the fingerprint's DSL part cannot be known, so the manifest is trusted. Nothing here imports the
DSL.
"""

from __future__ import annotations

import hashlib
import json
import threading
import warnings
from pathlib import Path

from . import keys

MANIFEST = "manifest.json"
ERROR_LOG = "build-errors.log"  # the compiler output of a build's failures, which the builder leaves beside them
FORMAT = 1


def read_manifest(directory: Path) -> dict:
    data = json.loads((directory / MANIFEST).read_text())
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("entries"), dict):
        raise ValueError(f"not a format-{FORMAT} cute-kernels AOT manifest")
    return data


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class AotDir:
    """The runtime's read-only view of one AOT directory (re-read when its manifest changes)."""

    _open: dict = {}
    _open_lock = threading.Lock()

    @classmethod
    def open(cls, directory: Path) -> "AotDir":
        try:
            stamp = (directory / MANIFEST).stat().st_mtime_ns
        except OSError:
            stamp = None
        with cls._open_lock:
            view = cls._open.get(directory)
            if view is None or view.stamp != stamp:
                view = cls._open[directory] = cls(directory, stamp)
            return view

    def __init__(self, directory: Path, stamp):
        self.directory = directory
        self.stamp = stamp
        self._rejected: dict[str, str] = {}
        self._warned = False
        try:
            manifest = read_manifest(directory)
            self.entries, self.sm_count, self.error = manifest["entries"], manifest.get("sm_count"), None
        except (OSError, ValueError) as e:
            self.entries, self.sm_count, self.error = {}, None, f"{directory / MANIFEST} is unusable ({e})"

    def find(self, key: keys.CompileKey, sm_count: int | None = None) -> Path | None:
        """The library for ``key`` if its entry matches and its bytes hash right, else None.
        ``sm_count``: the GPU's, to say why a router kernel is missing from a directory whose
        tilings were chosen for another SM count."""
        text = key.describe()
        entry = self.entries.get(text)
        if self.error or entry is None:
            reason = self.error or f"{self.directory} has no entry for it"
            if not self.error and sm_count is not None and self.sm_count not in (None, sm_count):
                # Not a normal miss: the directory was tiled for another GPU; say so once.
                self._reject(text, f"{reason}; it was built for GPUs of {self.sm_count} SMs and this one has "
                                   f"{sm_count}, which tiles the router kernels differently: rebuild it with "
                                   f"`cute-kernels aot --sm-count {sm_count}`")
            else:
                self._rejected[text] = reason
            return None
        path = self.directory / entry["file"]
        if entry.get("arch") != key.arch:
            reason = f"its entry in {self.directory} is for {entry.get('arch')}"
        elif keys.dsl_available() and entry.get("fingerprint") != key.fingerprint():
            reason = (f"{self.directory} was built from other kernel sources or DSL "
                      f"(fingerprint {entry.get('fingerprint')}, installed {key.fingerprint()})")
        elif not path.is_file():
            reason = f"{path} is missing"
        elif sha256(path) != entry.get("sha256"):
            reason = f"{path} does not match its sha256 in the manifest"
        else:
            return path
        self._reject(text, reason)
        return None

    def load(self, key: keys.CompileKey, sm_count: int | None = None):
        """The compiled function for ``key`` from this directory, or None."""
        path = self.find(key, sm_count)
        if path is None:
            return None
        import tvm_ffi  # a run-time dependency, loaded on the first library only

        try:
            return getattr(tvm_ffi.load_module(str(path)), keys.FUNCTION_NAME)
        except Exception as e:  # noqa: BLE001 - e.g. a library built against a newer libc
            self._reject(key.describe(), f"{path} does not load ({e})")
            return None

    def why_not(self, key: keys.CompileKey) -> str:
        return self._rejected.get(key.describe(), f"{self.directory} has no entry for it")

    def _reject(self, text: str, reason: str) -> None:
        self._rejected[text] = reason
        if not self._warned:  # a broken deployment, not a normal miss: say so once
            self._warned = True
            warnings.warn(f"cute-kernels: AOT artifact for {text} not used: {reason}", RuntimeWarning,
                          stacklevel=5)


def verify(directory: Path) -> tuple[list[str], str]:
    """(problems, summary): every mismatch between the directory, its manifest and the sources."""
    try:
        manifest = read_manifest(directory)
    except (OSError, ValueError) as e:
        return [f"{directory / MANIFEST}: missing or unreadable ({e})"], ""
    entries = manifest["entries"]
    check_sources = keys.dsl_available()
    problems, listed, size = [], {MANIFEST, ERROR_LOG}, 0
    for text, entry in sorted(entries.items()):
        name = entry.get("file", "?")
        listed.add(name)
        path = directory / name
        if not text.endswith(f"@{entry.get('arch')}"):
            problems.append(f"arch mismatch: {name} is listed for {entry.get('arch')} but its key is {text}")
        if not path.is_file():
            problems.append(f"missing file: {name} ({text})")
            continue
        size += path.stat().st_size
        if sha256(path) != entry.get("sha256"):
            problems.append(f"sha256 mismatch: {name} ({text})")
        elif path.stat().st_size != entry.get("size"):
            problems.append(f"size mismatch: {name} ({text})")
        if check_sources:
            try:
                installed = keys.key_fingerprint(text)
            except ValueError:  # a family these sources do not have
                installed = None
            if entry.get("fingerprint") != installed:
                problems.append(f"stale fingerprint: {name} ({text}) was built from sources "
                                f"{entry.get('fingerprint')} with DSL {entry.get('dsl')}; installed: "
                                f"{installed} with DSL {keys.dsl_version()}")
    problems += [f"unlisted file: {p.name}" for p in sorted(directory.iterdir()) if p.name not in listed]
    checked = "checked against the installed sources" if check_sources else "not checked (no CuTe DSL installed)"
    sms = f" for GPUs of {manifest['sm_count']} SMs" if manifest.get("sm_count") else ""
    return problems, f"{len(entries)} kernels{sms}, {size / 1e6:.1f} MB; fingerprints {checked}"
