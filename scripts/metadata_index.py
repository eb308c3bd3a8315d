"""A local simple index that lets pip resolve from wheel metadata alone (used by scripts/lock-cuda.sh).

    python scripts/metadata_index.py [UPSTREAM]     # prints "http://127.0.0.1:PORT/simple", serves until killed

A resolver needs each candidate's METADATA, not the wheel. PyPI publishes it next to every
wheel (`<wheel url>.metadata`, PEP 658) and says so in its simple index (`data-core-metadata`);
some mirrors serve the index pages without that attribute, or lack some `.metadata` files, and
pip then downloads each candidate wheel in full: several GB for the CUDA stack (torch, vLLM,
the nvidia-* libraries). This server forwards `GET /simple/<project>/` to UPSTREAM (default
https://pypi.org/simple) and points each wheel link at itself with `data-core-metadata="true"`:

* `<wheel>.metadata` comes from upstream's `.metadata` file, or, where that is missing, out of
  the wheel with HTTP range requests (the zip's central directory and the METADATA member:
  typically a few hundred KB, not the wheel);
* the wheel itself is a redirect to upstream (pip checks its sha256 as usual);
* sdist links are left as they are.

Each metadata file served is logged on stderr as `metadata <file> <bytes read from upstream>`.
Standard library only.
"""

from __future__ import annotations

import base64
import html
import io
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

UPSTREAM = "https://pypi.org/simple"
ANCHOR = re.compile(r"<a\s[^>]*>", re.IGNORECASE)
HREF = re.compile(r'href="([^"]*)"', re.IGNORECASE)
TIMEOUT = 120


def _encode(url: str) -> str:
    return base64.urlsafe_b64encode(url.encode("utf-8")).decode("ascii").rstrip("=")


def _decode(token: str) -> str:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("utf-8")


def rewrite_page(page: str, base_url: str, self_url: str) -> str:
    """The index page with each wheel link pointing at `self_url/file/...` and marked as having metadata."""

    def fix(match: re.Match) -> str:
        tag = match.group(0)
        href = HREF.search(tag)
        if not href:
            return tag
        url, _, fragment = urllib.parse.urljoin(base_url, html.unescape(href.group(1))).partition("#")
        path = urllib.parse.urlsplit(url).path
        if not path.endswith(".whl"):
            return tag
        filename = path.rsplit("/", 1)[-1]
        local = f"{self_url}/file/{_encode(url)}/{filename}" + (f"#{fragment}" if fragment else "")
        tag = tag[: href.start(1)] + html.escape(local, quote=True) + tag[href.end(1):]
        tag = re.sub(r'\sdata-(core|dist-info)-metadata="[^"]*"', "", tag)
        return tag[:-1].rstrip("/").rstrip() + ' data-core-metadata="true" data-dist-info-metadata="true">'

    return ANCHOR.sub(fix, page)


class RemoteFile(io.RawIOBase):
    """A read-only, seekable view of a URL through HTTP range requests (enough for zipfile)."""

    def __init__(self, url: str):
        self.url = url
        self.pos = 0
        self.fetched = 0
        self._start, self._data = 0, b""
        request = urllib.request.Request(url, headers={"Range": "bytes=-1"})
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            total = response.headers.get("Content-Range", "").rpartition("/")[2]
            if response.status != 206 or not total.isdigit():
                raise OSError(f"{url}: no range requests")
            self.size = int(total)

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self.pos

    def seek(self, offset, whence=io.SEEK_SET):
        self.pos = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence] + offset
        return self.pos

    def readinto(self, buffer):
        want = min(len(buffer), self.size - self.pos)
        if want <= 0:
            return 0
        if not (self._start <= self.pos and self.pos + want <= self._start + len(self._data)):
            end = min(self.size, self.pos + max(want, 256 * 1024)) - 1  # a little read-ahead
            request = urllib.request.Request(self.url, headers={"Range": f"bytes={self.pos}-{end}"})
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                self._start, self._data = self.pos, response.read()
            self.fetched += len(self._data)
        offset = self.pos - self._start
        chunk = self._data[offset:offset + want]
        buffer[: len(chunk)] = chunk
        self.pos += len(chunk)
        return len(chunk)


def wheel_metadata(url: str) -> tuple[bytes, int]:
    """(METADATA of the wheel at url, bytes read): upstream's .metadata file, else out of the zip."""
    try:
        with urllib.request.urlopen(url + ".metadata", timeout=TIMEOUT) as response:
            data = response.read()
            return data, len(data)
    except urllib.error.HTTPError as err:
        if err.code != 404:
            raise
    remote = RemoteFile(url)
    with zipfile.ZipFile(io.BufferedReader(remote, buffer_size=64 * 1024)) as wheel:
        names = [n for n in wheel.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
        if len(names) != 1:
            raise OSError(f"{url}: {len(names)} .dist-info/METADATA files")
        data = wheel.read(names[0])
    return data, remote.fetched


def make_handler(upstream: str):
    class Handler(BaseHTTPRequestHandler):
        def _send(self, body: bytes, content_type: str):
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802 (http.server's name)
            parts = [p for p in urllib.parse.urlsplit(self.path).path.split("/") if p]
            try:
                if len(parts) == 2 and parts[0] == "simple":
                    url = f"{upstream.rstrip('/')}/{parts[1]}/"
                    request = urllib.request.Request(url, headers={"Accept": "text/html"})
                    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                        page = response.read().decode(response.headers.get_content_charset() or "utf-8")
                        base = response.geturl()
                    self_url = f"http://{self.headers.get('Host') or '127.0.0.1'}"
                    self._send(rewrite_page(page, base, self_url).encode("utf-8"), "text/html; charset=utf-8")
                elif len(parts) == 3 and parts[0] == "file" and parts[2].endswith(".whl.metadata"):
                    url = _decode(parts[1])
                    data, read = wheel_metadata(url)
                    print(f"metadata {parts[2]} {read}", file=sys.stderr, flush=True)
                    self._send(data, "application/octet-stream")
                elif len(parts) == 3 and parts[0] == "file":
                    self.send_response(302)
                    self.send_header("Location", _decode(parts[1]))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self.send_error(404, "only /simple/<project>/ and its wheel links are served")
            except urllib.error.HTTPError as err:
                self.send_error(err.code, f"upstream: {err.reason}")
            except Exception as err:  # a failed upstream read is the client's error to report
                print(f"error {self.path}: {err!r}", file=sys.stderr, flush=True)
                self.send_error(502, f"upstream: {err}")

        def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
            pass

    return Handler


def main(argv: list[str]) -> int:
    upstream = argv[0] if argv else UPSTREAM
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(upstream))
    print(f"http://127.0.0.1:{server.server_address[1]}/simple", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
