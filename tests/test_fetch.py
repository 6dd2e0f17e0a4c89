"""`python -m gancolor.fetch fetch` against a real HTTP server on 127.0.0.1.

The server is ours so the tests can make it misbehave the way real hosts do: cut the
connection part-way, ignore Range requests, or serve a file that changed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from gancolor import fetch
from gancolor.fetch import MARKER, REGISTRY, main
from helpers import one_error_line

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- server


@dataclass
class ServerState:
    root: Path
    ranges_supported: bool = True
    drop_after: int | None = None  # cut the next response after this many body bytes
    ranges_seen: list[str | None] = field(default_factory=list)


class RangeHandler(BaseHTTPRequestHandler):
    server: "FileServer"

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep pytest output clean

    def do_GET(self) -> None:
        state = self.server.state
        range_header = self.headers.get("Range")
        state.ranges_seen.append(range_header)
        path = state.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404, "Not Found")
            return
        data = path.read_bytes()
        start = self._range_start(range_header) if state.ranges_supported else 0
        if start >= len(data) and start > 0:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send_body(data, start, partial=start > 0)

    @staticmethod
    def _range_start(header: str | None) -> int:
        m = re.fullmatch(r"bytes=(\d+)-", header or "")
        return int(m.group(1)) if m else 0

    def _send_body(self, data: bytes, start: int, partial: bool) -> None:
        body = data[start:]
        self.send_response(206 if partial else 200)
        if partial:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Accept-Ranges", "bytes" if self.server.state.ranges_supported else "none")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        drop = self.server.state.drop_after
        if drop is not None:
            self.server.state.drop_after = None
            body = body[:drop]
            self.close_connection = True  # the client sees EOF before Content-Length
        self.wfile.write(body)


class FileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: ServerState) -> None:
        super().__init__(("127.0.0.1", 0), RangeHandler)
        self.state = state

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FileServer]:
    root = tmp_path / "srv"
    root.mkdir()
    srv = FileServer(ServerState(root))
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


# --------------------------------------------------------------------------- archives


def png_bytes(seed: int, size: int = 24) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


FACADES = {  # relative path inside the set -> content
    "train/1.png": png_bytes(1),
    "train/more/2.png": png_bytes(2),
    "val/3.png": png_bytes(3),
    "test/deep/er/4.png": png_bytes(4),
}
HORSES = {
    "trainA/h1.png": png_bytes(10),
    "trainB/z1.png": png_bytes(11),
    "testA/h2.png": png_bytes(12),
    "testB/z2.png": png_bytes(13),
}


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_tar(files: dict[str, bytes], top: str = "facades", extra: list[tarfile.TarInfo] = ()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for rel, data in files.items():
            _tar_add(tar, f"{top}/{rel}", data)
        for info in extra:
            tar.addfile(info, io.BytesIO(b"evil" if info.isfile() else b""))
    return buf.getvalue()


def make_zip(files: dict[str, bytes], top: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for rel, data in files.items():
            zf.writestr(f"{top}/{rel}", data)
    return buf.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_files(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        assert (root / rel).read_bytes() == data, rel


@pytest.fixture
def facades(server: FileServer, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """facades.tar.gz on the server, with the registry pointed at it through the env var."""
    data = make_tar(FACADES)
    (server.state.root / "facades.tar.gz").write_bytes(data)
    monkeypatch.setenv("GANCOLOR_DATASETS_URL_FACADES", server.url("facades.tar.gz"))
    return data


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "datasets"


# --------------------------------------------------------------------------- cases


def test_fetch_with_pinned_sha256_unpacks_and_writes_marker(facades: bytes, dest: Path, capsys) -> None:
    assert main(["fetch", "facades", "--dest", str(dest), "--sha256", sha(facades)]) == 0
    assert_files(dest / "facades", FACADES)  # the archive's facades/ level is dropped
    marker = json.loads((dest / "facades" / MARKER).read_text())
    assert marker["sha256"] == sha(facades)
    assert marker["layout"] == "aligned"
    assert marker["url"].endswith("/facades.tar.gz") and marker["date"]
    assert sorted(os.listdir(dest)) == ["facades"]  # no .part, archive, or staging left
    assert capsys.readouterr().err == ""


def test_interrupted_download_resumes_with_range(facades: bytes, server: FileServer, dest: Path, capsys) -> None:
    cut = len(facades) // 3
    server.state.drop_after = cut
    assert main(["fetch", "facades", "--dest", str(dest)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "resume" in line and f"{cut:,}" in line
    part = dest / "facades.tar.gz.part"
    assert part.stat().st_size == cut
    assert not (dest / "facades").exists()

    assert main(["fetch", "facades", "--dest", str(dest), "--sha256", sha(facades), "--keep-archive"]) == 0
    assert server.state.ranges_seen[-1] == f"bytes={cut}-"
    assert (dest / "facades.tar.gz").read_bytes() == facades
    assert not part.exists()
    assert_files(dest / "facades", FACADES)


def test_server_without_range_support_restarts_from_zero(
    facades: bytes, server: FileServer, dest: Path, capsys
) -> None:
    dest.mkdir()
    (dest / "facades.tar.gz.part").write_bytes(b"stale bytes from some other file")
    server.state.ranges_supported = False
    assert main(["fetch", "facades", "--dest", str(dest), "--sha256", sha(facades), "--keep-archive"]) == 0
    assert server.state.ranges_seen == ["bytes=32-"]  # asked to resume, got a plain 200
    assert "starting over" in capsys.readouterr().out
    assert (dest / "facades.tar.gz").read_bytes() == facades
    assert_files(dest / "facades", FACADES)


def test_complete_part_is_not_downloaded_again(facades: bytes, server: FileServer, dest: Path) -> None:
    dest.mkdir()
    (dest / "facades.tar.gz.part").write_bytes(facades)  # e.g. killed between download and rename
    assert main(["fetch", "facades", "--dest", str(dest), "--sha256", sha(facades)]) == 0
    assert server.state.ranges_seen == [f"bytes={len(facades)}-"]  # answered 416, nothing sent
    assert_files(dest / "facades", FACADES)


def test_wrong_checksum_is_one_line_and_unpacks_nothing(facades: bytes, dest: Path, capsys) -> None:
    assert main(["fetch", "facades", "--dest", str(dest), "--sha256", "0" * 64]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "checksum mismatch" in line and sha(facades) in line
    assert not (dest / "facades").exists()
    assert os.listdir(dest) == []  # the bad download is gone too


def test_first_use_records_checksum_and_later_force_checks_it(
    facades: bytes, server: FileServer, dest: Path, capsys
) -> None:
    assert main(["fetch", "facades", "--dest", str(dest)]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"^facades: sha256 {sha(facades)} ", out, re.M)
    marker_before = (dest / "facades" / MARKER).read_text()
    assert json.loads(marker_before)["sha256"] == sha(facades)

    (server.state.root / "facades.tar.gz").write_bytes(make_tar({"train/x.png": png_bytes(99)}))
    assert main(["fetch", "facades", "--dest", str(dest), "--force"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "checksum mismatch" in line and "--sha256" in line
    assert_files(dest / "facades", FACADES)  # what was unpacked before is untouched
    assert (dest / "facades" / MARKER).read_text() == marker_before


def test_second_fetch_says_already_there(facades: bytes, server: FileServer, dest: Path, capsys) -> None:
    assert main(["fetch", "facades", "--dest", str(dest)]) == 0
    requests = len(server.state.ranges_seen)
    capsys.readouterr()
    assert main(["fetch", "facades", "--dest", str(dest)]) == 0
    assert "already there" in capsys.readouterr().out
    assert len(server.state.ranges_seen) == requests


def _symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 4
    return info


@pytest.mark.parametrize(
    "extra",
    [
        [_file("../evil")],
        [_file("facades/../../evil")],
        [_file("/tmp/gancolor-test-evil")],
        [_symlink("facades/link", "../../evil")],
        [_symlink("facades/link", "/etc"), _file("facades/link/evil")],
        [_symlink("facades/up", "train"), _symlink("facades/link", "up/../../evil")],
        [_symlink("facades/parent", "..")],  # inside the archive, but dest/ once unpacked
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink-out", "through-abs-link", "link-chain", "link-to-dest"],
)
def test_unsafe_tar_is_refused(
    extra: list[tarfile.TarInfo], server: FileServer, monkeypatch, tmp_path: Path, dest: Path, capsys
) -> None:
    data = make_tar(FACADES, extra=extra)
    (server.state.root / "facades.tar.gz").write_bytes(data)
    monkeypatch.setenv("GANCOLOR_DATASETS_URL_FACADES", server.url("facades.tar.gz"))
    assert main(["fetch", "facades", "--dest", str(dest)]) == 2
    assert "refusing to unpack" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "evil").exists() and not Path("/tmp/gancolor-test-evil").exists()
    # Only the verified archive stays (it saves a download); no set, no staging folder.
    assert os.listdir(dest) == ["facades.tar.gz"]


def test_symlink_inside_the_set_is_kept(server: FileServer, monkeypatch, dest: Path) -> None:
    data = make_tar(FACADES, extra=[_symlink("facades/val/alias.png", "../train/1.png")])
    (server.state.root / "facades.tar.gz").write_bytes(data)
    monkeypatch.setenv("GANCOLOR_DATASETS_URL_FACADES", server.url("facades.tar.gz"))
    assert main(["fetch", "facades", "--dest", str(dest)]) == 0
    alias = dest / "facades" / "val" / "alias.png"
    assert alias.is_symlink() and alias.read_bytes() == FACADES["train/1.png"]


def test_zip_unpaired_set_via_url_flag(server: FileServer, dest: Path) -> None:
    data = make_zip(HORSES, top="horse2zebra")
    (server.state.root / "h2z.zip").write_bytes(data)
    url = server.url("h2z.zip")
    assert main(["fetch", "horse2zebra", "--dest", str(dest), "--url", url, "--sha256", sha(data)]) == 0
    assert_files(dest / "horse2zebra", HORSES)
    assert json.loads((dest / "horse2zebra" / MARKER).read_text())["layout"] == "unpaired"


def test_zip_with_dotdot_member_is_refused(server: FileServer, dest: Path, capsys) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../evil.png", png_bytes(5))
    (server.state.root / "bad.zip").write_bytes(buf.getvalue())
    assert main(["fetch", "horse2zebra", "--dest", str(dest), "--url", server.url("bad.zip")]) == 2
    assert "refusing to unpack" in one_error_line(capsys.readouterr().err)
    assert not (dest / "horse2zebra").exists()


def test_unknown_name_lists_the_known_ones(dest: Path, capsys) -> None:
    assert main(["fetch", "nosuchset", "--dest", str(dest)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "nosuchset" in line
    assert all(name in line for name in REGISTRY)
    assert not dest.exists()


def test_http_error_is_one_line(server: FileServer, dest: Path, capsys) -> None:
    assert main(["fetch", "facades", "--dest", str(dest), "--url", server.url("missing.tar.gz")]) == 2
    assert "HTTP 404" in one_error_line(capsys.readouterr().err)


def test_connection_refused_is_one_line(dest: Path, capsys) -> None:
    with socket.socket() as s:  # a port that was free a moment ago has nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["fetch", "facades", "--dest", str(dest), "--url", f"http://127.0.0.1:{port}/x.tar.gz"]) == 2
    assert "cannot download" in one_error_line(capsys.readouterr().err)


def test_env_var_name_for_odd_names() -> None:
    assert fetch.env_var("coco-val2017") == "GANCOLOR_DATASETS_URL_COCO_VAL2017"
    assert fetch.env_var("summer2winter_yosemite") == "GANCOLOR_DATASETS_URL_SUMMER2WINTER_YOSEMITE"


def test_no_registry_entry_claims_an_unverified_checksum() -> None:
    # Pinned values must come from a download someone checked, never from memory.
    for entry in REGISTRY.values():
        assert entry.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", entry.sha256)


def run_module(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )


def test_module_entry_point_lists_sets() -> None:
    proc = run_module("gancolor.fetch", "list")
    assert proc.returncode == 0, proc.stderr
    assert "renamed" not in proc.stderr
    header, *rows = proc.stdout.splitlines()
    assert header.split()[:4] == ["name", "layout", "size", "description"]
    assert {row.split()[0] for row in rows} == set(REGISTRY)


def test_old_entry_point_still_runs_and_says_it_was_renamed(dest: Path) -> None:
    # Scripts written before the rename call `python -m gancolor.datasets`; for one
    # release it must do exactly what gancolor.fetch does, plus one line on stderr.
    new = run_module("gancolor.fetch", "list")
    old = run_module("gancolor.datasets", "list")
    assert old.returncode == 0, old.stderr
    assert old.stdout == new.stdout
    notices = [line for line in old.stderr.splitlines() if "renamed" in line]
    assert len(notices) == 1 and notices[0].startswith("gancolor.datasets is renamed gancolor.fetch; ")
    failed = run_module("gancolor.datasets", "fetch", "nosuchset", "--dest", str(dest))
    assert failed.returncode == 2
    assert failed.stderr.splitlines()[-1].startswith("gancolor: error: unknown data set 'nosuchset'")


def test_old_import_path_is_the_same_api() -> None:
    from gancolor import datasets

    assert datasets.main is main and datasets.REGISTRY is REGISTRY and datasets.fetch is fetch.fetch
