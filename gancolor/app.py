"""A web page to colourise a photo with clicks: python -m gancolor.app ckpt=PATH

    python -m gancolor.app ckpt=runs/pix2pix/.../checkpoints/best.pt [port=8000] [host=127.0.0.1]

Open the address it prints. Upload a photo: its automatic colourisation appears at
once. With a hints model (experiment=pix2pix_hints) click on the picture to put a
colour point there (the colour picker sets its colour; undo and clear take points
back); each change colours the photo again. "Download" saves the result at the
photo's full resolution (PNG).

One small page served by the standard library's http.server, its script and style
inline: nothing is fetched from elsewhere, so it works with no network. It listens
on 127.0.0.1 unless host= says otherwise, keeps uploads in a temporary folder that
is removed when it stops, and writes nowhere else. A file it cannot read is refused
with a message on the page.

Options (key=value; defaults in conf/app.yaml):
  port=8000           0: any free port (printed)
  host=127.0.0.1      the address to listen on (0.0.0.0 shows the page to your network)
  device=auto         auto | cpu | cuda | cuda:N
  render_size=N       short side the net runs at (default: its training resolution)
  use_ema=true        the generators' EMA weights where the checkpoint has them
  max_pixels=N        larger photos are refused (default 50000000)
"""

from __future__ import annotations

import io
import json
import shutil
import signal
import sys
import tempfile
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import numpy as np
from PIL import Image

from gancolor.commandline import compose_command
from gancolor.errors import ConfigError, UserError, fail
from gancolor.hints import TRAINED_WITHOUT_HINTS, HintError, UserHints, parse_points
from gancolor.options import bool_option, int_option

MAX_UPLOAD_BYTES = 200 * 1024 * 1024
# A browser that closes the tab or cancels a request mid-response: nothing to report.
DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)
KEPT_PHOTOS = 4  # photos kept decoded for further clicks; older ones are forgotten


@dataclass
class Photo:
    name: str
    pixels: np.ndarray
    alpha: np.ndarray | None


class ColorizeApp:
    """The page's server side: one Colorizer, the uploaded photos, a temporary folder."""

    def __init__(self, colorizer, workdir: Path, max_pixels: int | None = 50_000_000) -> None:
        self.colorizer = colorizer
        self.workdir = workdir
        self.max_pixels = max_pixels
        self.photos: OrderedDict[str, Photo] = OrderedDict()
        self.lock = threading.Lock()  # one net call at a time

    @property
    def takes_hints(self) -> bool:
        return self.colorizer.takes_hints

    def upload(self, name: str, data: bytes) -> dict:
        """Decode an uploaded file; its id, size, and whether the model takes hints."""
        from gancolor.data.images import UnreadableImage, load_image

        suffix = "".join(c for c in Path(name).suffix[:8] if c.isalnum() or c == ".")
        path = self.workdir / f"{uuid.uuid4().hex}{suffix}"  # never the client's name: no path from outside
        path.write_bytes(data)
        try:
            decoded = load_image(path, max_pixels=self.max_pixels)
        except UnreadableImage as exc:
            raise UserError(f"cannot read {Path(name).name or 'the file'}: {exc.reason}") from None
        finally:
            path.unlink(missing_ok=True)
        pixels = decoded.pixels
        if pixels.dtype != np.uint8 and pixels.ndim == 3:
            pixels = (pixels >> 8).astype(np.uint8) if pixels.dtype == np.uint16 else pixels.astype(np.uint8)
        photo_id = uuid.uuid4().hex
        with self.lock:
            self.photos[photo_id] = Photo(Path(name).name, pixels, decoded.alpha)
            while len(self.photos) > KEPT_PHOTOS:
                self.photos.popitem(last=False)
        height, width = pixels.shape[:2]
        return {"id": photo_id, "width": width, "height": height, "hints": self.takes_hints}

    def colorize(self, photo_id: str, points: list) -> bytes:
        """The photo colourised with `points` ({"x", "y", "color"} in its pixels), as PNG bytes."""
        photo = self.photos.get(photo_id)
        if photo is None:
            raise HintError("that photo is no longer here: upload it again")
        hints = None
        if points:
            if not self.takes_hints:
                raise HintError(f"this model {TRAINED_WITHOUT_HINTS}")
            hints = UserHints(parse_points(points, "points"), source="points")
        with self.lock:
            result = self.colorizer(photo.pixels, photo.alpha, hints)
        buffer = io.BytesIO()
        Image.fromarray(result).save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()


class Handler(BaseHTTPRequestHandler):
    app: ColorizeApp  # set on the subclass `make_server` builds

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass  # quiet: the terminal shows the address and errors only

    def handle(self) -> None:
        try:
            super().handle()
        except DISCONNECTS:
            pass  # the client went away; socketserver would print a traceback for it

    def do_GET(self) -> None:
        if self.path in ("/", "/index.html"):
            self._send(200, PAGE.encode(), "text/html; charset=utf-8")
        else:
            self._send(404, b"not found", "text/plain")

    def do_POST(self) -> None:
        lengths = self.headers.get_all("Content-Length") or []
        length = int(lengths[0].strip()) if len(set(lengths)) == 1 and _is_length(lengths[0]) else None
        # Without one plain length the body's end is unknown: reading to EOF would wait
        # for as long as the client keeps the connection open. The unread body would be
        # taken for the next request, so the connection closes after the answer.
        if length is None:
            self.close_connection = True
            self._json(400, {"error": "the request needs one Content-Length header of a number of bytes, got "
                                      + (", ".join(repr(v) for v in lengths) or "none")})
            return
        if length > MAX_UPLOAD_BYTES:
            self.close_connection = True
            self._json(413, {"error": f"the file is over {MAX_UPLOAD_BYTES >> 20} MB"})
            return
        body = self.rfile.read(length)
        try:
            if self.path == "/upload":
                self._json(200, self.app.upload(unquote(self.headers.get("X-Filename") or "photo"), body))
            elif self.path == "/colorize":
                request = json.loads(body or b"{}")
                if not isinstance(request, dict):
                    raise UserError('the request must be a JSON object: {"id": ..., "points": [...]}')
                png = self.app.colorize(str(request.get("id")), request.get("points") or [])
                self._send(200, png, "image/png")
            else:
                self._send(404, b"not found", "text/plain")
        except DISCONNECTS:
            raise  # not the request's fault: nothing to answer, nobody to answer (see handle)
        except (UserError, ValueError) as exc:
            self._json(400, {"error": " ".join(str(exc).split())})
        except Exception as exc:  # noqa: BLE001 - the page says what went wrong, the server goes on
            print(f"gancolor: app: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            self._json(500, {"error": f"{type(exc).__name__}: {exc}"})

    def _json(self, status: int, payload: dict) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)


def _is_length(value: str) -> bool:
    """Content-Length as HTTP has it: ASCII digits only (int() would also take '-1',
    '+5', '1_000' and other scripts' digits)."""
    value = value.strip()
    return value.isascii() and value.isdigit()


def make_server(app: ColorizeApp, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """An HTTP server for `app` (serve_forever() runs it); port 0 takes a free one."""
    handler = type("AppHandler", (Handler,), {"app": app})
    try:
        return ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def load_app(ckpt, workdir: Path, device: str = "auto", render_size: int | None = None, use_ema: bool = True,
             max_pixels: int | None = 50_000_000) -> ColorizeApp:
    from gancolor.data.images import allow_large_images
    from gancolor.inference import Colorizer, pick_device, run_checkpoint, trained_size
    from gancolor.onnx_runtime import load_model

    allow_large_images(max_pixels)  # the page's own max_pixels decides, not Pillow's bomb warning
    device = pick_device(device)
    recipe, ckpt_data = load_model(run_checkpoint(ckpt, lambda m: print(m, file=sys.stderr)), device, use_ema=use_ema)
    colorizer = Colorizer(recipe, render_size or trained_size(ckpt_data), device)
    return ColorizeApp(colorizer, workdir, max_pixels)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg = compose_command("app", argv, path_keys=frozenset({"ckpt"}), usage=__doc__ or "")
    workdir = Path(tempfile.mkdtemp(prefix="gancolor-app-"))
    # SIGTERM ends it as Ctrl-C does, so the temporary folder is removed either way.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        # Checked before the model is loaded (socket's OverflowError otherwise, after it).
        port = int_option("port", cfg.port, -(1 << 62))  # the type here, the range below in one wording
        if not 0 <= port <= 65535:
            raise ConfigError(f"port must be 0..65535, got {port}")
        app = load_app(
            Path(str(cfg.ckpt)).expanduser(),
            workdir,
            device=str(cfg.device),
            render_size=int_option("render_size", cfg.render_size, 1, allow_none=True),
            use_ema=bool_option("use_ema", cfg.use_ema),
            max_pixels=int_option("max_pixels", cfg.max_pixels, 1, allow_none=True),
        )
        server = make_server(app, str(cfg.host), port)
        host, port = server.server_address[:2]
        print(f"gancolor: colourise at http://{host}:{port}/ ({'with' if app.takes_hints else 'without'} hints; Ctrl-C stops)", flush=True)
        try:
            server.serve_forever()
        finally:
            server.server_close()
            app.colorizer.close()
    except KeyboardInterrupt:
        pass
    except UserError as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        fail(str(exc), exc.exit_code)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gancolor</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; background: #f4f4f2; color: #222; }
h1 { font-size: 1.3em; margin: 0 0 .6em; }
#bar { display: flex; gap: .8em; align-items: center; flex-wrap: wrap; margin-bottom: .8em; }
#message { min-height: 1.4em; margin: .4em 0; }
#message.error { color: #b00020; font-weight: bold; }
#stage { position: relative; display: inline-block; line-height: 0; }
#result { max-width: 90vw; max-height: 75vh; cursor: crosshair; box-shadow: 0 1px 6px #0004; }
.dot { position: absolute; width: 12px; height: 12px; margin: -7px 0 0 -7px; border: 2px solid #fff;
       border-radius: 50%; box-shadow: 0 0 2px #000; pointer-events: none; }
button, a.button { font: inherit; padding: .3em .8em; }
a.button { border: 1px solid #888; border-radius: 3px; background: #fff; color: #222; text-decoration: none; }
a.disabled { opacity: .4; pointer-events: none; }
</style></head>
<body>
<h1>gancolor: colourise with clicks</h1>
<div id="bar">
  <input type="file" id="file" accept="image/*">
  <label>colour <input type="color" id="colour" value="#e02020"></label>
  <button id="undo" disabled>undo</button>
  <button id="clear" disabled>clear</button>
  <a id="download" class="button disabled" download="colourised.png" href="#">download</a>
</div>
<div id="message">Upload a photo; then click on it to give a colour.</div>
<div id="stage"><img id="result" alt=""></div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let photo = null, points = [], busy = false, again = false, resultUrl = null;

function say(text, error) { $("message").textContent = text; $("message").className = error ? "error" : ""; }

async function fail(response) {
  let text = response.statusText;
  try { text = (await response.json()).error || text; } catch (e) {}
  throw new Error(text);
}

$("file").addEventListener("change", async () => {
  const file = $("file").files[0];
  if (!file) return;
  say("reading " + file.name + " ...");
  try {
    const response = await fetch("/upload", {method: "POST", body: file, headers: {"X-Filename": encodeURIComponent(file.name)}});
    if (!response.ok) await fail(response);
    photo = await response.json();
    photo.name = file.name.replace(/\\.[^.]*$/, "");
    points = [];
    await render();
  } catch (e) { say(e.message, true); }
});

async function render() {
  if (!photo) return;
  if (busy) { again = true; return; }
  busy = true;
  say("colourising ...");
  try {
    const response = await fetch("/colorize", {method: "POST", headers: {"Content-Type": "application/json"},
                                                body: JSON.stringify({id: photo.id, points: points})});
    if (!response.ok) await fail(response);
    const blob = await response.blob();
    if (resultUrl) URL.revokeObjectURL(resultUrl);
    resultUrl = URL.createObjectURL(blob);
    const img = $("result");
    await new Promise((done) => { img.onload = done; img.src = resultUrl; });
    $("download").href = resultUrl;
    $("download").download = photo.name + "_colour.png";
    $("download").classList.remove("disabled");
    drawDots();
    const n = points.length;
    say(photo.hints ? (n ? n + " colour point" + (n > 1 ? "s" : "") + ". Click to add more." : "Automatic colours. Click on the photo to give a colour.")
                    : "Automatic colours (this model takes no hints).");
    $("result").dataset.rendered = String(n);
  } catch (e) { say(e.message, true); }
  busy = false;
  $("undo").disabled = $("clear").disabled = points.length === 0;
  if (again) { again = false; render(); }
}

function drawDots() {
  document.querySelectorAll(".dot").forEach((d) => d.remove());
  const img = $("result");
  for (const p of points) {
    const dot = document.createElement("div");
    dot.className = "dot";
    dot.style.left = ((p.x + 0.5) / photo.width * img.clientWidth) + "px";
    dot.style.top = ((p.y + 0.5) / photo.height * img.clientHeight) + "px";
    dot.style.background = p.color;
    $("stage").appendChild(dot);
  }
}

$("result").addEventListener("click", (event) => {
  if (!photo) return;
  if (!photo.hints) { say("This model takes no hints: it colourises automatically only.", true); return; }
  const img = $("result"), box = img.getBoundingClientRect();
  const x = Math.min(photo.width - 1, Math.max(0, Math.floor((event.clientX - box.left) / box.width * photo.width)));
  const y = Math.min(photo.height - 1, Math.max(0, Math.floor((event.clientY - box.top) / box.height * photo.height)));
  points.push({x: x, y: y, color: $("colour").value});
  drawDots();
  render();
});
$("undo").addEventListener("click", () => { points.pop(); drawDots(); render(); });
$("clear").addEventListener("click", () => { points = []; drawDots(); render(); });
window.addEventListener("resize", drawDots);
</script>
</body></html>
"""


if __name__ == "__main__":
    sys.exit(main())
