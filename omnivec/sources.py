"""Find source files, decide their modality by extension, and give each a stable key.

Files reached through a symlink whose target lies outside the source folders (the real paths of the
roots given to ingest, and of the folder of a manifest given as a root) are skipped and counted
unless ``follow_links``; manifest members that resolve outside them are ``errors`` rows. The same
boundary is checked again when a file is read (:func:`omnivec.media.open_regular`), against a file
swapped for a link after discovery.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from omnivec.errors import DecodeError, SourceError
from omnivec.manifests import NotAManifest, is_manifest, read_manifest
from omnivec.media import display_path, lies_within, not_regular, special_kind, storable

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
TEXT_EXTENSIONS = frozenset({".txt", ".md", ".markdown"})
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac", ".opus", ".webm"})
MODALITY_BY_EXTENSION: dict[str, str] = {
    **{ext: "image" for ext in IMAGE_EXTENSIONS},
    **{ext: "text" for ext in TEXT_EXTENSIONS},
    **{ext: "audio" for ext in AUDIO_EXTENSIONS},
}
MODALITIES = ("image", "text", "audio")


def modality_for(path: str) -> str | None:
    """The modality a file's extension claims (content is checked again when it is read)."""
    return MODALITY_BY_EXTENSION.get(os.path.splitext(path)[1].lower())


def item_id_for(uri: str) -> str:
    """A stable key for one source file: the first 128 bits of sha256 of its URI."""
    return hashlib.sha256(uri.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str, block: int = 1 << 20) -> str:
    """sha256 of a file read in blocks (memory does not grow with its size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class SourceFile:
    uri: str
    modality: str
    size: int
    mtime_ns: int

    @property
    def item_id(self) -> str:
        return item_id_for(self.uri)


@dataclass(slots=True)
class Discovery:
    """What a walk over the sources found."""

    files: list[SourceFile] = field(default_factory=list)
    roots: list[str] = field(default_factory=list)  # absolute folders and files that were walked
    skipped: int = 0  # files of a type no space handles, or excluded by a glob
    problems: list[tuple[str, str]] = field(default_factory=list)  # (uri, reason) seen while walking
    manifest_assets: list[tuple[str, list[str]]] = field(default_factory=list)  # (asset key, member uris)
    # real paths a file may resolve into (None: not checked, links are followed anywhere); set by
    # discover(), checked again by the reader
    inside: tuple[str, ...] | None = None
    links_skipped: int = 0  # files whose link leads outside ``inside``: not read

    def outside(self, path: str) -> bool:
        """Whether ``path`` resolves outside the source folders (and this discovery does not follow links)."""
        return self.inside is not None and not lies_within(os.path.realpath(path), self.inside)

    def owns(self, uri: str) -> bool:
        """Whether ``uri`` lies under one of the walked roots (so its absence means deletion)."""
        return any(uri == root or uri.startswith((root.rstrip(os.sep) + os.sep, root + "#")) for root in self.roots)


def _matches(rel: str, patterns: Iterable[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    for pat in patterns:
        target = rel if "/" in pat else name
        if fnmatch.fnmatchcase(target, pat):
            return True
    return False


def _keep(rel: str, include: list[str], exclude: list[str]) -> bool:
    if exclude and _matches(rel, exclude):
        return False
    return not include or _matches(rel, include)


def not_utf8_name(path: str) -> str:
    return (f"file name is not valid UTF-8 ({display_path(os.path.basename(path)) or display_path(path)}); "
            "rename it: omnivec stores names as UTF-8 text")


def outside_problem(where: str) -> str:
    return (f"{where} resolves outside the source folders (a symlink, or a path that leaves them); not read. "
            "Ingest its folder, or pass --follow-links (follow_links = true) to read what links point to")


def _stat_file(path: str, modality: str, disc: Discovery, member_of: str | None = None) -> None:
    """Add a file found in a walk (``member_of`` None) or listed by a manifest, after its checks."""
    if not storable(path):
        disc.problems.append((display_path(path), not_utf8_name(path)))
        return
    try:
        st = os.stat(path)
    except OSError as exc:  # dangling symlink, link loop, permission, vanished
        disc.problems.append((path, f"cannot stat: {exc.strerror or exc}"))
        return
    kind = special_kind(st.st_mode)
    if kind is not None:  # a pipe would block a reader, /dev/zero would never end
        disc.problems.append((path, not_regular(kind)))
        return
    if member_of is not None and disc.outside(path):  # listed by name: say why it is not read
        disc.problems.append((path, outside_problem(f"listed in {member_of}, but it")))
        return
    if member_of is None and os.path.islink(path) and disc.outside(path):  # walked folders hold only links out
        disc.links_skipped += 1
        return
    disc.files.append(SourceFile(path, modality, st.st_size, st.st_mtime_ns))


def _add_manifest(path: str, disc: Discovery) -> None:
    """Members of every manifest row become items (inline captions too); a missing member file is a
    problem row, and the rest of its asset is kept."""
    if not storable(path):
        disc.problems.append((display_path(path), not_utf8_name(path)))
        return
    if os.path.islink(path) and disc.outside(path):  # its captions would be stored: a link out, skipped
        disc.links_skipped += 1
        return
    try:
        rows = read_manifest(path, disc.inside)
        mtime = os.stat(path).st_mtime_ns
    except NotAManifest:
        disc.skipped += 1
        return
    except (DecodeError, OSError) as exc:
        disc.problems.append((path, str(exc)))
        return
    for n, row in enumerate(rows):
        members = []
        for col, member in row.paths:
            modality = modality_for(member)
            where = f"manifest {path} row {n} column {display_path(col)!r}"
            if not storable(member):
                disc.problems.append((display_path(member), f"{where}: {not_utf8_name(member)}"))
            elif modality is None:
                disc.problems.append((member, f"{where}: unsupported file type"))
            elif not os.path.exists(member):
                disc.problems.append((member, f"listed in {where}, but the file does not exist"))
            else:
                before = len(disc.files)
                _stat_file(member, modality, disc, member_of=where)
                if len(disc.files) > before:
                    members.append(member)
        for col, uri, text in row.captions:
            if not storable(uri):
                disc.problems.append((display_path(uri), f"manifest {path} row {n}: the column name "
                                      f"{display_path(col)!r} is not valid UTF-8"))
                continue
            # a caption with a lone surrogate is kept: reading it gives an errors row that says so
            disc.files.append(SourceFile(uri, "text", len(text.encode("utf-8", "surrogatepass")), mtime))
            members.append(uri)
        if members:
            disc.manifest_assets.append((row.key, members))


def _walk_dir(root: str, include: list[str], exclude: list[str], hidden: bool, disc: Discovery) -> None:
    def onerror(exc: OSError) -> None:
        disc.problems.append((display_path(str(exc.filename or root)), f"cannot list folder: {exc.strerror or exc}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=False):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        dirnames[:] = sorted(
            d for d in dirnames
            if (hidden or not d.startswith(".")) and not (exclude and _matches(rel_dir + d, exclude))
        )
        for name in sorted(filenames):
            if not hidden and name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            if is_manifest(name) and _keep(rel_dir + name, include, exclude):
                _add_manifest(path, disc)
                continue
            modality = modality_for(name)
            if modality is None or not _keep(rel_dir + name, include, exclude):
                disc.skipped += 1
                continue
            _stat_file(path, modality, disc)


def _boundary(paths: list[str]) -> tuple[str, ...]:
    """Real paths of the roots, and of the folder of each manifest given as a root (its members are
    named relative to it)."""
    out: list[str] = []
    for path in paths:
        if os.path.exists(path):
            out.append(os.path.realpath(path))
            if not os.path.isdir(path) and is_manifest(path):
                out.append(os.path.realpath(os.path.dirname(path)))
    return tuple(dict.fromkeys(out))


def discover(
    paths: Iterable[str | os.PathLike[str]],
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    include_hidden: bool = False,
    follow_links: bool = False,
) -> Discovery:
    """Walk folders (recursively, symlinked folders not followed) and single files.

    A glob without ``/`` matches a file name, one with ``/`` the path relative to the root.
    A symlinked file whose target lies outside the roots is skipped (``links_skipped``) unless
    ``follow_links``. Raises :class:`SourceError` for a path that does not exist or a file of an
    unknown type.
    """
    include, exclude = list(include or []), list(exclude or [])
    absolute = [os.path.abspath(os.fspath(raw)) for raw in paths]
    for path in absolute:
        if not storable(path):
            raise SourceError(f"{display_path(path)}: {not_utf8_name(path)}")
    disc = Discovery(inside=None if follow_links else _boundary(absolute))
    for path in absolute:
        if os.path.isdir(path):
            disc.roots.append(path)
            _walk_dir(path, include, exclude, include_hidden, disc)
        elif os.path.isfile(path) and is_manifest(path):
            try:
                read_manifest(path)
            except NotAManifest as exc:
                raise SourceError(f"{path}: unsupported file type: a CSV/JSONL/Parquet file is read as a "
                                  f"manifest, but this one has {exc}") from None
            except DecodeError:
                pass  # reported as an errors row below
            disc.roots.append(path)
            _add_manifest(path, disc)
        elif os.path.isfile(path):
            modality = modality_for(path)
            if modality is None:
                known = ", ".join(sorted(MODALITY_BY_EXTENSION))
                raise SourceError(f"{path}: unsupported file type; omnivec reads {known}")
            disc.roots.append(path)
            _stat_file(path, modality, disc)
        elif os.path.lexists(path):
            raise SourceError(f"{path}: not a regular file or folder (dangling link?)")
        else:
            raise SourceError(f"{path}: no such file or folder")
    # the same file reached through two roots is one item
    seen: set[str] = set()
    unique = []
    for f in disc.files:
        if f.uri not in seen:
            seen.add(f.uri)
            unique.append(f)
    disc.files = unique
    # one problem per path (a file walked in a folder can also be listed by a manifest there)
    problems: dict[str, str] = {}
    for uri, reason in disc.problems:
        problems.setdefault(uri, reason)
    disc.problems = list(problems.items())
    return disc


def iter_batches(files: list[SourceFile], size: int) -> Iterator[list[SourceFile]]:
    for start in range(0, len(files), size):
        yield files[start : start + size]


__all__ = [
    "Discovery",
    "MODALITIES",
    "SourceFile",
    "discover",
    "item_id_for",
    "iter_batches",
    "modality_for",
    "sha256_bytes",
]
