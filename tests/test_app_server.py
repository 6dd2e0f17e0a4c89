"""The web page's server (gancolor.app) over HTTP, without a browser: what it answers to
requests it cannot use, clients that go away, and a port it cannot have.
The page itself, in headless Chromium, is tests/test_app.py (marked browser)."""

from __future__ import annotations

import http.client
import io
import json
import socket
import threading
import time

import numpy as np
import pytest
from helpers import header_only_png, tiny_checkpoint
from PIL import Image

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from gancolor.app import load_app, make_server

    folder = tmp_path_factory.mktemp("app")
    app = load_app(tiny_checkpoint(folder / "tiny.pt"), folder, device="cpu")
    server = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    app.colorizer.close()


def post(server, path: str, body: bytes, headers: dict | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    connection.request("POST", path, body, headers or {})
    response = connection.getresponse()
    result = response.status, response.read()
    connection.close()
    return result


def photo_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("body", [b"[1, 2]", b'"id"', b"3", b"null"])
def test_a_colorize_request_that_is_not_a_json_object_is_a_400(server, body, capfd):
    status, answer = post(server, "/colorize", body)
    assert status == 400
    assert json.loads(answer)["error"] == 'the request must be a JSON object: {"id": ..., "points": [...]}'
    assert capfd.readouterr().err == ""  # the client's mistake: nothing on the server's terminal


@pytest.mark.parametrize("length", [b"Content-Length: abc\r\n", b"Content-Length: -1\r\n", b"Content-Length: 1_0\r\n",
                                    b"Content-Length: 4\r\nContent-Length: 5\r\n", b""])
def test_a_bad_or_missing_content_length_is_a_400_at_once(server, length, capfd):
    """A length that is no number (int() raised in the handler: a traceback and no
    answer), a negative one (read to EOF: a hang while the client waits) or none: 400,
    the page's JSON error, the connection closed, nothing on the server's terminal."""
    with socket.create_connection(server.server_address[:2], timeout=10) as sock:
        sock.sendall(b"POST /colorize HTTP/1.1\r\nHost: x\r\n" + length + b"\r\n" + b'{"id": "x"}')
        answer = b""
        while chunk := sock.recv(65536):  # the server closes: a hang would time out here
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 400 ") or head.startswith(b"HTTP/1.1 400 "), answer
    assert json.loads(body)["error"].startswith("the request needs one Content-Length header of a number of bytes, got ")
    assert capfd.readouterr().err == ""
    assert post(server, "/colorize", b"[1]")[0] == 400  # and it goes on serving


def test_a_client_that_goes_away_mid_response_leaves_no_traceback(server, capfd):
    status, answer = post(server, "/upload", photo_bytes(), {"X-Filename": "a.png"})
    assert status == 200
    request = json.dumps({"id": json.loads(answer)["id"], "points": []}).encode()
    for _ in range(5):  # gone before the answer is written: a reset (SO_LINGER 0) or a plain close
        for linger in (True, False):
            sock = socket.create_connection(server.server_address[:2])
            if linger:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.sendall(b"POST /colorize HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(request) + request)
            sock.close()
    time.sleep(1.0)  # the server finishes those requests and meets the closed sockets
    assert post(server, "/colorize", request)[0] == 200  # and it goes on serving
    err = capfd.readouterr().err
    assert "Traceback" not in err and "BrokenPipe" not in err and "ConnectionReset" not in err, err


def test_an_upload_over_max_pixels_is_refused_from_its_header_at_any_size(server, tmp_path, capfd):
    """50 MP is the page's max_pixels; a header of 10000 MP is over Pillow's own refusal
    too (179 MP), which must not speak for it: the same words as a photo just over."""
    for side, megapixels in ((8000, "64.0"), (100000, "10000.0")):
        header_only_png(tmp_path / "big.png", side, side)
        status, answer = post(server, "/upload", (tmp_path / "big.png").read_bytes(), {"X-Filename": "big.png"})
        assert status == 400
        assert json.loads(answer)["error"] == f"cannot read big.png: {side}x{side} = {megapixels} MP is over the limit of 50 MP (max_pixels)"
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_a_port_out_of_range_is_one_line(port, tmp_path, capsys):
    from gancolor.app import main

    with pytest.raises(SystemExit) as info:
        main([f"ckpt={tmp_path / 'never-loaded.pt'}", f"port={port}"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert info.value.code == 2 and lines == [f"gancolor: error: port must be 0..65535, got {port}"]
