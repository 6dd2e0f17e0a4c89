"""Download and unpack public data sets for colourisation GANs.

    python -m gancolor.fetch list
    python -m gancolor.fetch fetch NAME [--dest DIR] [--sha256 HEX] [--url URL] [--force]

A set lands in ``<dest>/<name>/`` (``dest`` defaults to ``./datasets``) in the layout its
``data=`` option reads: ``aligned`` (pix2pix A|B pairs), ``unpaired`` (CycleGAN
trainA/trainB/testA/testB) or ``folder`` (a tree of colour images).

Checksums -- what is and is not verified
----------------------------------------
None of the registry entries below carries a pinned SHA-256: none could be checked
against a real download when the registry was written, and a checksum copied from
memory or guessed would be worse than none. So the policy is *trust on first use*:

* The first fetch computes the archive's SHA-256, prints it on one line and records it
  in ``<dest>/<name>/.gancolor-fetch.json``. That first download is only as trustworthy
  as the connection it came over.
* A later ``fetch --force`` of the same set is checked against the recorded value; a
  mismatch is an error and leaves the unpacked set as it was.
* ``--sha256 HEX`` pins a value you got elsewhere (a colleague, a mirror's listing); it
  wins over anything recorded. An entry given a ``sha256`` in the registry is always
  checked against it.

Downloads resume: the archive is written to ``<dest>/<name>.<ext>.part``, and a later run
asks the server for the rest with an HTTP Range request (starting over when the server
does not support ranges). The archive gets its final name only once its checksum
matched, and is removed after unpacking unless ``--keep-archive``.

Unpacking refuses members with absolute paths or ``..`` components, links that leave the
destination, and device files; it unpacks into a temporary folder next to the target and
moves it into place in one step, so a failed fetch leaves no half-filled set.

``--url`` or the environment variable ``GANCOLOR_DATASETS_URL_<NAME>`` (name upper-cased,
anything not a letter or digit turned into ``_``) points a set at a mirror.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import http.client
import json
import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Sequence

from tqdm import tqdm

from gancolor.errors import DataError, UserError

MARKER = ".gancolor-fetch.json"
ENV_PREFIX = "GANCOLOR_DATASETS_URL_"
CHUNK = 1 << 20
TIMEOUT_S = 60.0
USER_AGENT = "gancolor-fetch/0.1 (+python-urllib)"

_PIX2PIX = "https://efrosgans.eecs.berkeley.edu/pix2pix/datasets/{}.tar.gz"
_CYCLEGAN = "https://efrosgans.eecs.berkeley.edu/cyclegan/datasets/{}.zip"


@dataclass(frozen=True)
class Entry:
    """One downloadable set; ``archive`` is both the file extension and how to unpack it."""

    name: str
    url: str
    archive: str  # "tar.gz", "tgz" or "zip"
    layout: str  # the data= option that reads it: "aligned", "unpaired" or "folder"
    description: str
    size: str  # approximate download size, shown by `list` only
    sha256: str | None = None


def _pix2pix(name: str, description: str, size: str) -> Entry:
    return Entry(name, _PIX2PIX.format(name), "tar.gz", "aligned", description, size)


def _cyclegan(name: str, description: str, size: str) -> Entry:
    return Entry(name, _CYCLEGAN.format(name), "zip", "unpaired", description, size)


# Sizes are rounded from the hosts' listings and only tell the user what to expect.
REGISTRY: dict[str, Entry] = {
    e.name: e
    for e in (
        _pix2pix("facades", "CMP facades: 606 building photos | label maps (pix2pix)", "~30 MB"),
        _pix2pix("cityscapes", "2,975 street scenes | semantic label maps (pix2pix)", "~100 MB"),
        _pix2pix("maps", "1,096 training aerial photos | Google Maps tiles (pix2pix)", "~240 MB"),
        _pix2pix("edges2shoes", "50k Zappos shoe photos | edge maps (pix2pix)", "~2 GB"),
        _pix2pix("edges2handbags", "137k Amazon handbag photos | edge maps (pix2pix)", "~8 GB"),
        _pix2pix("night2day", "webcam scenes at night | by day (pix2pix)", "~1.9 GB"),
        _cyclegan("horse2zebra", "horses / zebras from ImageNet (CycleGAN)", "~110 MB"),
        _cyclegan("summer2winter_yosemite", "Yosemite in summer / winter (CycleGAN)", "~130 MB"),
        _cyclegan("monet2photo", "Monet paintings / landscape photos (CycleGAN)", "~290 MB"),
        Entry(
            "coco-val2017",
            "https://images.cocodataset.org/zips/val2017.zip",
            "zip",
            "folder",
            "COCO 2017 validation: 5,000 everyday colour photos",
            "~780 MB",
        ),
        Entry(
            "imagenette2-160",
            "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz",
            "tgz",
            "folder",
            "fast.ai Imagenette, 10 ImageNet classes, short side 160 px, train/ val/",
            "~95 MB",
        ),
    )
}


# --------------------------------------------------------------------------- registry


def lookup(name: str) -> Entry:
    entry = REGISTRY.get(name.lower())
    if entry is None:
        known = ", ".join(sorted(REGISTRY))
        raise UserError(f"unknown data set {name!r}; known: {known}")
    return entry


def env_var(name: str) -> str:
    return ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", name.upper())


def resolve_url(entry: Entry, override: str | None) -> str:
    return override or os.environ.get(env_var(entry.name)) or entry.url


def _check_hex(value: str) -> str:
    value = value.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise UserError(f"--sha256 wants 64 hex digits, got {value!r}")
    return value


# --------------------------------------------------------------------------- download


class _Restart(Exception):
    """The server cannot continue the .part we have; start the file over."""


def _send(url: str, start: int) -> http.client.HTTPResponse:
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)


def _range_field(content_range: str | None, index: int) -> int | None:
    """Field of `Content-Range: bytes FIRST-LAST/TOTAL` (or `bytes */TOTAL`), 0=FIRST, 2=TOTAL."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*", content_range or "")
    if not m or m.group(index + 1) in (None, "*"):
        return None
    return int(m.group(index + 1))


def _open_from(url: str, start: int) -> tuple[http.client.HTTPResponse | None, int]:
    """Ask for the file from byte `start`; return the response and where its body goes.

    A None response means the .part already holds the whole file (416 with a matching
    total). The offset falls back to 0 when the server sent the whole file instead.
    """
    try:
        response = _send(url, start)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not start:
            raise
        total = _range_field(exc.headers.get("Content-Range"), 2)
        exc.close()
        if total == start:
            return None, start
        raise _Restart from None
    if start and getattr(response, "status", None) == 206:
        if _range_field(response.headers.get("Content-Range"), 0) != start:
            response.close()
            raise _Restart
        return response, start
    return response, 0


def _expected_total(response: http.client.HTTPResponse, offset: int) -> int | None:
    total = _range_field(response.headers.get("Content-Range"), 2) if offset else None
    if total is None and response.headers.get("Content-Length", "").isdigit():
        total = offset + int(response.headers["Content-Length"])
    return total


def _copy(response: http.client.HTTPResponse, out: BinaryIO, bar: tqdm) -> str | None:
    """Stream the body into `out`; return why it stopped early, None when it simply ended."""
    try:
        while chunk := response.read(CHUNK):
            out.write(chunk)
            bar.update(len(chunk))
    except http.client.IncompleteRead as exc:
        out.write(exc.partial)
        return "connection closed"
    except (OSError, http.client.HTTPException) as exc:  # resets and timeouts are OSErrors
        return str(exc) or type(exc).__name__
    return None


def _download_into(url: str, part: Path, label: str) -> None:
    start = part.stat().st_size if part.exists() else 0
    response, offset = _open_from(url, start)
    if response is None:
        print(f"{label}: {part.name} is already complete")
        return
    if start and offset:
        print(f"{label}: resuming {part.name} at {offset:,} bytes")
    elif start:
        print(f"{label}: the server does not resume downloads; starting over")
    total = _expected_total(response, offset)
    with response, part.open("ab" if offset else "wb") as out, tqdm(
        total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
        desc=label, disable=None, file=sys.stderr, leave=False,
    ) as bar:
        problem = _copy(response, out, bar)
    have = part.stat().st_size
    if problem is None and total is not None and have < total:
        problem = "connection closed"
    if problem is not None:
        of = f" of {total:,}" if total is not None else ""
        raise UserError(
            f"download of {label} stopped after {have:,}{of} bytes ({problem}); "
            f"run the same command again to resume"
        )


def download(url: str, part: Path, label: str) -> None:
    """Fetch `url` into `part`, continuing an existing .part where the server allows it."""
    print(f"{label}: downloading {url}")
    try:
        try:
            _download_into(url, part, label)
        except _Restart:
            part.unlink(missing_ok=True)
            print(f"{label}: {part.name} does not match the server's file; starting over")
            _download_into(url, part, label)
    except urllib.error.HTTPError as exc:
        raise UserError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise UserError(f"cannot download {url}: {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise UserError(f"cannot download {url}: {exc}") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- unpacking


def _member_path(name: str, archive: str) -> PurePosixPath:
    """The member's path relative to the destination, refusing anything that could leave it."""
    parts = name.replace("\\", "/").split("/")
    absolute = name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", parts[0]) is not None
    if absolute or ".." in parts:
        raise DataError(f"{archive}: refusing to unpack {name!r}, its path leaves the destination")
    return PurePosixPath(*[p for p in parts if p not in ("", ".")])


def _top_folder(members: list[tuple[PurePosixPath, bool]]) -> str | None:
    """The one folder everything sits in (facades/, val2017/), which unpacking drops.

    members holds (path, is_dir) pairs; macOS zip litter beside the folder is ignored.
    """
    tops = {path.parts[0] for path, _ in members if path.parts} - {"__MACOSX"}
    if len(tops) != 1:
        return None
    top = tops.pop()
    if any(path == PurePosixPath(top) and not is_dir for path, is_dir in members):
        return None
    return top


def _link_escapes(link: PurePosixPath, target: str, symlinks: set[PurePosixPath], floor: int) -> bool:
    """Whether a symlink at `link` pointing to `target` reaches above the set's root.

    `floor` is the depth of that root inside the archive (1 when a top folder is
    dropped), so a link to the archive's top level, which would become dest/ once the
    folder moves into place, counts as escaping. The walk is lexical, so it also refuses
    targets that step through another symlink: `a/..` means something else on disk when
    `a` is itself a link.
    """
    if target.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", target):
        return True
    parts = list(link.parent.parts)
    for part in target.replace("\\", "/").split("/"):
        if parts and PurePosixPath(*parts) in symlinks:
            return True
        if part == "..":
            if len(parts) <= floor:
                return True
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return False


def _check_link(
    link: PurePosixPath, target: str, symlinks: set[PurePosixPath], floor: int, archive: str
) -> None:
    if _link_escapes(link, target, symlinks, floor):
        raise DataError(
            f"{archive}: refusing to unpack link {str(link)!r} -> {target!r}, it leaves the destination"
        )


def _refuse_through_links(paths: list[PurePosixPath], symlinks: set[PurePosixPath], archive: str) -> None:
    for path in paths:
        if any(parent in symlinks for parent in path.parents):
            raise DataError(f"{archive}: refusing to unpack {str(path)!r}, it lies behind a link")


def _check_tar(members: list[tarfile.TarInfo], archive: str) -> str | None:
    """Refuse anything unsafe in the tar; return its top folder, if it has one."""
    paths = [_member_path(m.name, archive) for m in members]
    top = _top_folder([(p, m.isdir()) for p, m in zip(paths, members)])
    symlinks = {p for p, m in zip(paths, members) if m.issym()}
    hardlink_targets = []
    for path, m in zip(paths, members):
        if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
            raise DataError(f"{archive}: refusing to unpack {m.name!r}, it is a device or fifo")
        if m.issym():
            _check_link(path, m.linkname, symlinks, 1 if top else 0, archive)
        elif m.islnk():
            hardlink_targets.append(_member_path(m.linkname, archive))  # relative to the archive root
    _refuse_through_links(paths + hardlink_targets, symlinks, archive)
    return top


def _unpack_tar(archive: Path, into: Path) -> str | None:
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        top = _check_tar(members, archive.name)
        # The data filter (Python >= 3.12, backported to later 3.8-3.11 releases) also
        # drops setuid bits and odd owners; our own check above gives the clearer message.
        extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(into, members=members, **extra)
    return top


def _check_zip(zf: zipfile.ZipFile, archive: str) -> str | None:
    """Refuse anything unsafe in the zip; return its top folder, if it has one."""
    infos = zf.infolist()
    paths = [_member_path(info.filename, archive) for info in infos]
    top = _top_folder([(p, info.is_dir()) for p, info in zip(paths, infos)])
    for path, info in zip(paths, infos):
        # zipfile writes symlink members as small text files, but a link that leaves the
        # destination would become one if someone unpacked the set with `unzip`.
        if stat.S_ISLNK(info.external_attr >> 16):
            target = zf.read(info).decode("utf-8", "replace")
            _check_link(path, target, set(), 1 if top else 0, archive)
    return top


def _unpack_zip(archive: Path, into: Path) -> str | None:
    with zipfile.ZipFile(archive) as zf:
        top = _check_zip(zf, archive.name)
        zf.extractall(into)
    return top


def _unpack(archive: Path, fmt: str, into: Path) -> Path:
    """Unpack into `into`; return the folder that holds the set (the top folder, if any)."""
    try:
        top = _unpack_zip(archive, into) if fmt == "zip" else _unpack_tar(archive, into)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{archive.name} is not a readable {fmt} archive: {exc}") from None
    return into / top if top else into


def _swap_in(new: Path, target: Path) -> None:
    """Put `new` at `target`, replacing an older copy without ever leaving neither."""
    if not target.exists():
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, old)
    try:
        os.replace(new, target)
    except OSError:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def extract(archive: Path, fmt: str, target: Path, marker: dict[str, object]) -> int:
    """Unpack `archive` into `target` with `marker` written inside; return the file count."""
    # Staging beside the target keeps the final os.replace on one file system.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".unpacking", dir=target.parent))
    try:
        root = _unpack(archive, fmt, staging)
        count = sum(1 for p in root.rglob("*") if p.is_file())
        if count == 0:
            raise DataError(f"{archive.name} holds no files")
        (root / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        _swap_in(root, target)
        return count
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --------------------------------------------------------------------------- fetch


def read_marker(target: Path) -> dict[str, object] | None:
    try:
        data = json.loads((target / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _expected_sha(
    entry: Entry, pinned: str | None, marker: dict[str, object] | None
) -> tuple[str | None, str]:
    """The checksum to hold the download to, and where it came from (for messages)."""
    if pinned:
        return pinned, "--sha256"
    if entry.sha256:
        return entry.sha256, "the registry"
    recorded = (marker or {}).get("sha256")
    if isinstance(recorded, str):
        return recorded, f"recorded on first fetch in {MARKER}"
    return None, "first use"


def _reusable(archive: Path, expected: str | None) -> bool:
    """A finished archive from an earlier run (say, whose unpacking failed) saves a download."""
    if not archive.exists():
        return False
    if expected is None or sha256_file(archive) == expected:
        return True
    archive.unlink()
    return False


def _verified_download(entry: Entry, url: str, archive: Path, expected: str | None, source: str) -> str:
    part = archive.with_name(archive.name + ".part")
    download(url, part, entry.name)
    digest = sha256_file(part)
    if expected is not None and digest != expected:
        # A resumed .part glued to a changed upstream file fails here too, so the bad
        # bytes go: the next run downloads from scratch.
        part.unlink()
        hint = ""
        if source.startswith("recorded"):
            hint = f"; if the file changed upstream on purpose, pass --sha256 {digest}"
        raise DataError(
            f"checksum mismatch for {entry.name}: expected sha256 {expected} ({source}), got {digest}; "
            f"the download was removed and nothing was unpacked{hint}"
        )
    part.replace(archive)
    return digest


def fetch(
    entry: Entry,
    dest: Path,
    *,
    url: str | None = None,
    sha256: str | None = None,
    force: bool = False,
    keep_archive: bool = False,
) -> Path:
    """Make `dest/<entry.name>` hold the unpacked set; return that folder."""
    target = dest / entry.name
    marker = read_marker(target)
    if marker is not None and not force:
        print(f"{entry.name}: already there in {target} (--force fetches it again)")
        return target
    if marker is None and target.exists() and any(target.iterdir()) and not force:
        raise DataError(
            f"{target} exists but was not made by `fetch`; move it away or pass --force to replace it"
        )

    source_url = resolve_url(entry, url)
    expected, source = _expected_sha(entry, sha256, marker)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {dest}: {exc.strerror or exc}") from None
    archive = dest / f"{entry.name}.{entry.archive}"
    if _reusable(archive, expected):
        print(f"{entry.name}: using {archive.name} from an earlier run")
        digest = expected or sha256_file(archive)
    else:
        digest = _verified_download(entry, source_url, archive, expected, source)
    if expected is None:
        print(f"{entry.name}: sha256 {digest} (nothing pinned; recorded in {MARKER}, later fetches must match)")

    record = {
        "name": entry.name,
        "url": source_url,
        "sha256": digest,
        "sha256_checked_against": source,
        "layout": entry.layout,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    count = extract(archive, entry.archive, target, record)
    if not keep_archive:
        archive.unlink()
    print(f"{entry.name}: {count:,} files in {target} (data={entry.layout})")
    return target


# --------------------------------------------------------------------------- CLI


def format_table(entries: Sequence[Entry]) -> str:
    rows = [("name", "layout", "size", "description")]
    rows += [(e.name, e.layout, e.size, e.description) for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:3], widths)) + "  " + r[3] for r in rows
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gancolor.fetch",
        description="Download public data sets for gancolor into ./datasets.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="show the data sets that can be fetched")
    f = sub.add_parser("fetch", help="download and unpack one data set")
    f.add_argument("name", help="a name from `list`")
    f.add_argument("--dest", type=Path, default=None, help="parent folder (default: ./datasets)")
    f.add_argument("--sha256", default=None, help="expected SHA-256 of the archive (64 hex digits)")
    f.add_argument("--url", default=None, help=f"download from here instead (also {ENV_PREFIX}<NAME>)")
    f.add_argument("--force", action="store_true", help="fetch again even if the set is already there")
    f.add_argument("--keep-archive", action="store_true", help="keep the archive after unpacking")
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "list":
        print(format_table(sorted(REGISTRY.values(), key=lambda e: (e.layout, e.name))))
        return 0
    entry = lookup(args.name)
    pinned = _check_hex(args.sha256) if args.sha256 else None
    dest = args.dest if args.dest is not None else Path.cwd() / "datasets"
    fetch(entry, dest, url=args.url, sha256=pinned, force=args.force, keep_archive=args.keep_archive)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed usage; hand back its code, don't exit
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return _run(args)
    except UserError as exc:
        print(f"gancolor: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("gancolor: error: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
