"""A ClickHouse HTTP-interface stand-in backed by chDB, run as its own process.

No ClickHouse server binary can be installed here, so tests that need a server
reachable over ClickHouse's HTTP interface (what clickhouse-connect's HTTP client
speaks in production) run this instead: ``python tests/clickhouse_http.py --port P
--path DIR``. Every query runs on the real ClickHouse engine (chDB, in this
process, data in DIR); this module only speaks the HTTP wire protocol:

* the statement comes from the ``query`` URL parameter, the body, or both
  (parameter, newline, body); ``INSERT ... FORMAT F`` followed by data has its
  data written to a temp file and run as ``INSERT ... FROM INFILE ... FORMAT F``;
* request bodies may be ``Content-Encoding`` lz4 / zstd / gzip / deflate / br,
  chunked or not; responses are compressed when ``enable_http_compression=1``
  and the client accepts one of those;
* every other URL parameter that is not transport-only is a ClickHouse setting
  applied to that request only (``SET`` on a fresh chDB connection handle, so
  ``readonly=1`` is enforced by the engine); ``param_x`` are query parameters;
  ``database`` selects the current database; ``default_format`` the output
  format; ``SET``/``USE`` statements persist per ``session_id``;
* errors answer ``Code: N. DB::Exception: ...`` with ``X-ClickHouse-Exception-Code``;
* ``GET /ping`` and ``GET /`` answer ``Ok.``.

It prints ``ready <port>`` once listening and exits cleanly on SIGTERM/SIGINT.
`ClickHouseHttp` runs it from tests: start, stop, kill, restart on the same
data directory and port, to simulate a ClickHouse outage.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import importlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

# URL parameters the HTTP layer consumes itself; everything else is a setting.
TRANSPORT_PARAMS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "query_id",
        "session_id",
        "session_timeout",
        "session_check",
        "quota_key",
        "compress",
        "decompress",
        "wait_end_of_query",
        "buffer_size",
        "client_protocol_version",
        "role",
        "user",
        "password",
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "enable_http_compression",
        "http_zlib_compression_level",
        "http_native_compression_disable_checksumming_on_decompress",
        "cancel_http_readonly_queries_on_client_close",
    }
)

_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CODE = re.compile(r"Code:\s*(\d+)")
# INSERT ... FORMAT <name> followed by inline data (searched in the statement's head only)
_INSERT_FORMAT = re.compile(
    rb"^\s*INSERT\b.*?\bFORMAT\s+([A-Za-z0-9_]+)[ \t]*(?:\r?\n)?", re.I | re.S
)
_SET_OR_USE = re.compile(r"^\s*(SET|USE)\b", re.I)
_RESULT_STATEMENT = re.compile(
    r"^\s*\(*\s*(SELECT|WITH|SHOW|DESC|DESCRIBE|EXISTS|EXPLAIN|CHECK|VALUES)\b", re.I
)
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.I)
_STATUS_BY_CODE = {
    62: 400,  # SYNTAX_ERROR
    60: 404,  # UNKNOWN_TABLE
    81: 404,  # UNKNOWN_DATABASE
    164: 403,  # READONLY
    497: 403,  # ACCESS_DENIED
    516: 401,  # AUTHENTICATION_FAILED
}


class ClickHouseError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _as_error(ex: Exception) -> ClickHouseError:
    text = str(ex).strip()
    start = text.find("Code: ")
    if start > 0:
        text = text[start:]
    match = _CODE.search(text)
    code = int(match.group(1)) if match else 1000  # POCO_EXCEPTION, as ClickHouse does
    if not text.startswith("Code: "):
        text = f"Code: {code}. DB::Exception: {text}"
    return ClickHouseError(code, text)


Codec = tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]  # compress, decompress


def _codecs() -> dict[str, Codec]:
    """The Content-Encodings this stand-in speaks (those importable here)."""
    codecs: dict[str, Codec] = {
        "gzip": (gzip.compress, gzip.decompress),
        "deflate": (zlib.compress, zlib.decompress),
    }
    with contextlib.suppress(ImportError):
        lz4: Any = importlib.import_module("lz4.frame")
        codecs["lz4"] = (lz4.compress, lz4.decompress)
    with contextlib.suppress(ImportError):
        try:
            zstd: Any = importlib.import_module("compression.zstd")
        except ImportError:
            zstd = importlib.import_module("backports.zstd")
        codecs["zstd"] = (zstd.compress, zstd.decompress)
    return codecs


_CODECS = _codecs()


def _decode(data: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return data
    if encoding not in _CODECS:
        raise ClickHouseError(
            1, f"Code: 1. DB::Exception: Unknown Content-Encoding {encoding}. (UNSUPPORTED_METHOD)"
        )
    try:
        return bytes(_CODECS[encoding][1](data))
    except Exception as ex:
        raise ClickHouseError(
            271, f"Code: 271. DB::Exception: Cannot decompress {encoding} body: {ex}"
        ) from ex


def _form_fields(content_type: str, body: bytes, params: dict[str, str]) -> bytes:
    """Move multipart form fields (``query``, ``param_x``) into params; the body is consumed."""
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    for part in message.iter_parts():
        if part.get_filename():
            raise ClickHouseError(
                48,
                "Code: 48. DB::Exception: external data is not supported here. (NOT_IMPLEMENTED)",
            )
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            params[name] = payload.decode()
    return b""


class Engine:
    """The one chDB engine of this process, with per-request connection handles."""

    def __init__(self, path: str) -> None:
        self._chdb: Any = importlib.import_module("chdb")
        self.path = path
        self.lock = threading.Lock()  # one engine call at a time
        self._main = self._chdb.connect(path)  # keeps the engine up between requests
        row = self._main.query("SELECT version(), timezone()", "TabSeparated").bytes()
        self.version, self.timezone = row.decode().strip().split("\t")
        self._sessions: dict[str, list[str]] = {}  # session_id -> SET/USE statements to replay

    def close(self) -> None:
        with self.lock:
            self._main.close()

    def execute(
        self,
        statement: bytes,
        data: bytes | None,
        settings: dict[str, str],
        params: dict[str, str],
        database: str | None,
        session_id: str | None,
        default_format: str,
    ) -> tuple[bytes, dict[str, str], str | None]:
        """Run one request; returns (body, summary, output format or None)."""
        sql = statement.decode("utf-8", errors="surrogateescape")
        tmp: str | None = None
        if data is not None:
            match = _TRAILING_FORMAT.search(sql)
            if match is None:
                raise ClickHouseError(62, "Code: 62. DB::Exception: INSERT data without FORMAT")
            handle, tmp = tempfile.mkstemp(suffix=".data")
            with os.fdopen(handle, "wb") as f:
                f.write(data)
            sql = f"{sql[: match.start()]} FROM INFILE {_quote(tmp)} FORMAT {match.group(1)}"
        try:
            with self.lock:
                conn = self._chdb.connect(self.path)
                try:
                    return self._run(
                        conn, sql, settings, params, database, session_id, default_format
                    )
                finally:
                    conn.close()
        finally:
            if tmp is not None:
                os.unlink(tmp)

    def _run(
        self,
        conn: Any,
        sql: str,
        settings: dict[str, str],
        params: dict[str, str],
        database: str | None,
        session_id: str | None,
        default_format: str,
    ) -> tuple[bytes, dict[str, str], str | None]:
        replay = self._sessions.get(session_id, []) if session_id else []
        try:
            for stmt in replay:
                conn.query(stmt, "TabSeparated")
            if database:
                conn.query(f"USE `{database.replace('`', '``')}`", "TabSeparated")
            # ClickHouse checks a request's settings against the session's constraints
            # before applying any of them, so readonly=1 goes last
            for name, value in sorted(settings.items(), key=lambda kv: kv[0] == "readonly"):
                if not _SETTING_NAME.match(name):
                    raise ClickHouseError(
                        115,
                        f"Code: 115. DB::Exception: Unknown setting '{name}'. (UNKNOWN_SETTING)",
                    )
                conn.query(f"SET {name} = {_quote(value)}", "TabSeparated")
            start = time.perf_counter_ns()
            result = conn.query(sql, default_format, params=params)
            elapsed = time.perf_counter_ns() - start
        except ClickHouseError:
            raise
        except Exception as ex:
            raise _as_error(ex) from ex
        if session_id and _SET_OR_USE.match(sql):
            self._sessions.setdefault(session_id, []).append(sql)
        body = bytes(result.bytes() or b"")
        summary = {
            "read_rows": str(result.rows_read()),
            "read_bytes": str(result.bytes_read()),
            "written_rows": str(result.rows_written()),
            "written_bytes": str(result.bytes_written()),
            "total_rows_to_read": str(result.rows_read()),
            "result_rows": "0",
            "result_bytes": str(len(body)),
            "elapsed_ns": str(elapsed),
        }
        fmt: str | None = None
        trailing = _TRAILING_FORMAT.search(sql)
        if trailing and "INFILE" not in sql.upper():
            fmt = trailing.group(1)
        elif body or _RESULT_STATEMENT.match(sql):
            fmt = default_format
        return body, summary, fmt


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ClickHouse"
    engine: Engine  # set on the subclass made by serve()

    def log_message(self, format: str, *args: Any) -> None:
        if os.environ.get("CLICKHOUSE_HTTP_LOG"):
            super().log_message(format, *args)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, headers: dict[str, str], content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path in ("/ping", "/") and "query=" not in self.path:
            self._send(200, b"Ok.\n", {}, "text/html; charset=UTF-8")
            return
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        split = urlsplit(self.path)
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        query_id = params.get("query_id") or str(uuid.uuid4())
        headers = {
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Timezone": self.engine.timezone,
            "X-ClickHouse-Server-Display-Name": socket.gethostname(),
        }
        if params.get("session_id"):
            headers["X-ClickHouse-Session-Id"] = params["session_id"]
        try:
            raw = self._read_body() if self.command == "POST" else b""
            if params.get("decompress") in ("1", "true"):
                raise ClickHouseError(
                    48,
                    "Code: 48. DB::Exception: decompress=1 (ClickHouse-native compressed "
                    "bodies) is not supported by this stand-in. (NOT_IMPLEMENTED)",
                )
            body = _decode(raw, self.headers.get("Content-Encoding", ""))
            if split.path.rstrip("/") not in ("",):
                raise ClickHouseError(
                    1000, f"Code: 1000. DB::Exception: no handler for {split.path}"
                )
            content_type = self.headers.get("Content-Type", "")
            if content_type.lower().startswith("multipart/form-data"):
                body = _form_fields(content_type, body, params)
            if self.command != "POST" and "readonly" not in params:
                params["readonly"] = "2"  # as ClickHouse does for GET requests
            result, summary, fmt = self._execute(params, body)
        except ClickHouseError as ex:
            headers["X-ClickHouse-Exception-Code"] = str(ex.code)
            message = ex.message.rstrip()
            if "(version" not in message:
                message += f" (version {self.engine.version})"
            status = _STATUS_BY_CODE.get(ex.code, 500)
            self._send(status, (message + "\n").encode(), headers, "text/plain; charset=UTF-8")
            return
        headers["X-ClickHouse-Summary"] = json.dumps(summary, separators=(",", ":"))
        if fmt:
            headers["X-ClickHouse-Format"] = fmt
        if params.get("enable_http_compression") in ("1", "true") and result:
            accepted = [
                e.strip().split(";")[0].lower()
                for e in self.headers.get("Accept-Encoding", "").split(",")
            ]
            for encoding in accepted:
                if encoding in _CODECS:
                    result = bytes(_CODECS[encoding][0](result))
                    headers["Content-Encoding"] = encoding
                    break
        content_type = (
            "application/octet-stream" if fmt == "Native" else "text/plain; charset=UTF-8"
        )
        self._send(200, result, headers, content_type)

    def _execute(
        self, params: dict[str, str], body: bytes
    ) -> tuple[bytes, dict[str, str], str | None]:
        query = params.get("query", "").encode()
        text = query + b"\n" + body if query and body else query or body
        if not text.strip():
            raise ClickHouseError(62, "Code: 62. DB::Exception: Empty query. (SYNTAX_ERROR)")
        statement, data = text, None
        match = _INSERT_FORMAT.match(text[:65536])
        if match and match.end() < len(text):
            statement, data = text[: match.end()].rstrip(), text[match.end() :]
        settings = {
            k: v
            for k, v in params.items()
            if k not in TRANSPORT_PARAMS and not k.startswith("param_")
        }
        bind = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
        return self.engine.execute(
            statement,
            data,
            settings,
            bind,
            params.get("database") or None,
            params.get("session_id") or None,
            params.get("default_format") or "TabSeparated",
        )


def serve(port: int, path: str, host: str = "127.0.0.1") -> None:
    engine = Engine(path)
    handler = type("BoundHandler", (Handler,), {"engine": engine})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True

    def on_signal(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"ready {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
        engine.close()


class ClickHouseHttp:
    """Runs this module as a separate process serving ClickHouse's HTTP interface.

    ``port`` is chosen once (free port) and kept across restarts, so a client
    configured with `url` reconnects after `start()` follows `stop()`/`kill()`.
    """

    def __init__(
        self, path: str | Path, port: int | None = None, ready_timeout: float = 30
    ) -> None:
        from tests.support import free_port  # here: run as a script, this file imports no tests

        self.path = Path(path)
        self.port = port or free_port()
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> ClickHouseHttp:
        if self.running:
            return self
        self.path.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--port", str(self.port)]
        cmd += ["--path", str(self.path)]
        deadline = time.monotonic() + self.ready_timeout
        while True:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None
            line = _readline(proc.stdout, deadline - time.monotonic())
            if line.strip() == f"ready {self.port}":
                self.proc = proc
                threading.Thread(target=proc.stdout.read, daemon=True).start()  # drain
                return self
            proc.kill()
            proc.wait()
            # the port may linger briefly after a kill; retry until the deadline
            if time.monotonic() >= deadline:
                raise RuntimeError(f"clickhouse_http did not start on {self.port}: {line!r}")
            time.sleep(0.2)

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM and wait (SIGKILL if it does not exit in time)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: an abrupt outage (committed parts stay on disk)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP: the port stays open but nothing answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def restart(self) -> ClickHouseHttp:
        self.stop()
        return self.start()

    def __enter__(self) -> ClickHouseHttp:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _readline(stream: Any, timeout: float) -> str:
    box: list[str] = [""]
    reader = threading.Thread(target=lambda: box.__setitem__(0, stream.readline()), daemon=True)
    reader.start()
    reader.join(max(timeout, 0.1))
    return box[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True, help="chDB data directory")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    serve(args.port, args.path, args.host)


if __name__ == "__main__":
    main()
