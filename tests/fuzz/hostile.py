"""Hand-written hostile requests to the ARM front door, sent as raw bytes over TLS (so nothing in a client
library tidies them up), and the check each answer must pass: no 5xx, an answer within a deadline, the
ARM error envelope {"error": {"code", "message"}} on every 4xx the application sends, the expected
status and code where Azure's is known, and kumo still alive afterwards.

uvicorn itself refuses requests that are not HTTP at all (a bad request line, a header with bytes HTTP
forbids, conflicting framing) with a plain-text 400 before kumo sees them, as Azure's own front end
answers those with HTML; cases marked `protocol` accept that."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import h11

TIMEOUT = 30.0  # seconds for one answer on a loaded machine
API = "api-version=2024-11-01"
MIB = 1 << 20


@dataclass
class Target:
    """Where to send and as whom."""

    host: str
    port: int
    tls: ssl.SSLContext
    token: str
    sub: str
    rg: str  # an existing resource group, so paths reach the providers


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float

    def error(self) -> dict[str, Any] | None:
        try:
            doc = json.loads(self.body)
        except ValueError:
            return None
        err = doc.get("error") if isinstance(doc, dict) else None
        ok = isinstance(err, dict) and isinstance(err.get("code"), str) and isinstance(err.get("message"), str)
        return err if ok else None


@dataclass
class Case:
    name: str
    group: str
    build: Callable[[Target], Iterable[bytes]]  # the raw request, possibly in pieces
    status: tuple[int, ...] = ()  # acceptable statuses (empty: any below 500)
    code: str | None = None  # the ARM error code expected
    protocol: bool = False  # may be refused by the HTTP layer with a plain 400
    waits: bool = False  # an incomplete request: the server may rightly keep waiting for the rest
    notes: list[str] = field(default_factory=list)


def send(t: Target, pieces: Iterable[bytes], timeout: float = TIMEOUT) -> Answer | None:
    """Send raw request bytes; parse the one answer. None when no answer came within `timeout`."""
    started = time.monotonic()
    deadline = started + timeout
    with socket.create_connection((t.host, t.port), timeout=timeout) as raw:
        with t.tls.wrap_socket(raw, server_hostname="localhost") as s:
            try:
                for piece in pieces:
                    s.sendall(piece)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                pass  # the server answered and closed before reading it all (an early 413); read the answer
            conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=1 << 20)
            conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))  # client state only
            conn.send(h11.EndOfMessage())
            status, headers, body = 0, {}, bytearray()
            while time.monotonic() < deadline:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    s.settimeout(max(0.1, deadline - time.monotonic()))
                    try:
                        data = s.recv(65536)
                    except (TimeoutError, socket.timeout):
                        return None
                    except (ConnectionResetError, ssl.SSLError):
                        data = b""
                    conn.receive_data(data)
                    if not data and not status:
                        return Answer(0, {}, b"", time.monotonic() - started)  # closed without answering
                    continue
                if isinstance(event, h11.Response):
                    status = event.status_code
                    headers = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    return Answer(status, headers, bytes(body), time.monotonic() - started)
            return None


def request(method: str, target: str, headers: list[tuple[str, str]] | None = None, body: bytes | None = None,
            *, auth: bool = True) -> Callable[[Target], list[bytes]]:
    """A well-framed request; `{sub}`, `{rg}` and `{token}` in the target and headers are filled in."""

    def build(t: Target) -> list[bytes]:
        fill = {"sub": t.sub, "rg": t.rg, "token": t.token}
        lines = [f"{method} {target.format(**fill)} HTTP/1.1", "Host: localhost", "Connection: close"]
        if auth:
            lines.append(f"Authorization: Bearer {t.token}")
        hs = [(k, v.format(**fill)) for k, v in headers or []]
        if body is not None and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in hs):
            hs.append(("Content-Length", str(len(body))))
        if body is not None and not any(k.lower() == "content-type" for k, _ in hs):
            hs.append(("Content-Type", "application/json"))
        lines += [f"{k}: {v}" for k, v in hs]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
        return [head + (body or b"")]

    return build


def raw(data: bytes) -> Callable[[Target], list[bytes]]:
    """Bytes as they are, with {sub}/{rg}/{token} filled in."""

    def build(t: Target) -> list[bytes]:
        return [data.replace(b"{sub}", t.sub.encode()).replace(b"{rg}", t.rg.encode())
                .replace(b"{token}", t.token.encode())]

    return build


def chunked(target: str, total: int, chunk: int = 64 * 1024) -> Callable[[Target], Iterable[bytes]]:
    """A PUT with a chunked body of `total` bytes and no Content-Length."""

    def build(t: Target) -> Iterable[bytes]:
        yield (f"PUT {target.format(sub=t.sub, rg=t.rg)} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
               f"Authorization: Bearer {t.token}\r\nContent-Type: application/json\r\n"
               "Transfer-Encoding: chunked\r\n\r\n").encode()
        body = b'{"location":"local","tags":{"a":"' + b"x" * total + b'"}}'
        for i in range(0, len(body), chunk):
            piece = body[i:i + chunk]
            yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        yield b"0\r\n\r\n"

    return build


RG = "/subscriptions/{sub}/resourcegroups/{rg}"
NEW_RG = "/subscriptions/{sub}/resourcegroups/fuzz-hostile-new"
VNET = RG + "/providers/Microsoft.Network/virtualNetworks/fuzzvnet"
CG = RG + "/providers/Microsoft.ContainerInstance/containerGroups/fuzzcg"
DEEP_ARRAYS = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECTS = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
BAD_SKIP = base64.urlsafe_b64encode(b"\xff\xfe\x00").decode()


def _body_cases() -> list[Case]:
    def put(name: str, body: bytes, status: tuple[int, ...] = (400,), code: str | None = "InvalidRequestContent",
            target: str = NEW_RG, headers: list[tuple[str, str]] | None = None) -> Case:
        return Case(name, "body", request("PUT", f"{target}?{API}", headers, body), status, code)

    return [
        put("truncated JSON", b'{"location": '),
        put("trailing garbage", b'{"location": "local"}}}'),
        put("bare word", b"nul"),
        put("unterminated string", b'{"location": "local'),
        put("array body", b"[1, 2]"),
        put("string body", b'"local"'),
        put("number body", b"12"),
        put("null body", b"null"),
        put("empty body", b""),
        put("whitespace body", b"  \r\n\t "),
        put("BOM then JSON", b'\xef\xbb\xbf{"location": "local"}', (200, 201, 400), None),
        put("bad UTF-8", b'{"location": "local", "tags": {"a": "\xff\xfe"}}'),
        put("overlong UTF-8", b'{"location": "\xc0\xaflocal"}'),
        put("UTF-16 body", '{"location": "local"}'.encode("utf-16")),
        put("lone surrogate escape", b'{"location": "local", "tags": {"a": "\\ud800"}}', (200, 201, 400), None),
        put("NUL in string", b'{"location": "local", "tags": {"a": "\\u0000"}}', (200, 201, 400), None),
        put("NaN", b'{"location": "local", "tags": {"a": NaN}}'),
        put("Infinity", b'{"location": "local", "properties": {"x": Infinity}}'),
        put("-Infinity in JSONC", b'{location: "local", properties: {x: -Infinity,},}'),
        put("huge exponent", b'{"location": "local", "properties": {"x": 1e999999}}'),
        put("100k-digit integer", b'{"location": "local", "properties": {"x": ' + b"9" * 100_000 + b"}}"),
        put("100k-digit hex in JSONC", b'{location: "local", properties: {x: 0x' + b"f" * 100_000 + b"}}"),
        put("duplicate keys", b'{"location": "nowhere", "location": "local"}', (200, 201, 400), None),
        put("100k nested arrays", DEEP_ARRAYS),
        put("10k nested objects", DEEP_OBJECTS),
        put("deep nesting as JSONC", b"// comment\n" + DEEP_ARRAYS),
        put("deep nesting in a tag", b'{"location": "local", "tags": {"a": ' + DEEP_ARRAYS[:20_000] + DEEP_ARRAYS[
            -20_000:] + b"}}"),
        put("5 MB body", b'{"location": "local", "tags": {"a": "' + b"x" * (5 * MIB) + b'"}}', (413,),
            "RequestContentTooLarge"),
        Case("5 MB chunked body", "body", chunked(f"{NEW_RG}?{API}", 5 * MIB), (413,), "RequestContentTooLarge"),
        Case("Content-Length 10 GB", "body", request("PUT", f"{NEW_RG}?{API}", [("Content-Length", "10737418240")],
                                                       b'{"location": "local"}'), (413,), "RequestContentTooLarge"),
        put("many keys", b"{" + b",".join(b'"k%d": %d' % (i, i) for i in range(200_000)) + b"}", (400,), None),
        put("wrong type for tags", b'{"location": "local", "tags": [1]}'),
        put("wrong type for location", b'{"location": {"a": 1}}', (400,), None),
        put("Content-Type text/plain", b'{"location": "local"}', (200, 201, 400, 415), None,
            headers=[("Content-Type", "text/plain")]),
        put("Content-Type xml", b"<location>local</location>", (400, 415), None,
            headers=[("Content-Type", "application/xml")]),
        put("Content-Type garbage", b'{"location": "local"}', (200, 201, 400, 415), None,
            headers=[("Content-Type", ";;;charset=utf-99; boundary")]),
        put("charset latin-1", b'{"location": "local", "tags": {"a": "\xe9"}}', (400,), None,
            headers=[("Content-Type", "application/json; charset=iso-8859-1")]),
        put("VNet with 100k subnets", b'{"location": "local", "properties": {"subnets": ['
            + b",".join(b'{"name": "s%d"}' % i for i in range(100_000)) + b"]}}", (400,), None, target=VNET),
        put("container group bad body", b'{"location": "local", "properties": {"containers": "x"}}', (400,), None,
            target=CG),
        Case("body on GET", "body", request("GET", f"{RG}?{API}", body=b"[" * 1000), (200,)),
        Case("body on DELETE of missing", "body", request("DELETE", f"{RG}/providers/Microsoft.Network/"
                                                          f"virtualNetworks/none?{API}", body=b"\xff"), (204, 200)),
    ]


def _path_cases() -> list[Case]:
    def get(name: str, target: str, status: tuple[int, ...] = (400, 404), code: str | None = None,
            method: str = "GET", protocol: bool = False) -> Case:
        return Case(name, "path", request(method, target), status, code, protocol=protocol)

    long_name = "a" * 100_000
    return [
        get("dot-dot segments", f"/subscriptions/{{sub}}/resourcegroups/../../tenants?{API}", (200, 400, 404)),
        get("encoded dot-dot", f"/subscriptions/{{sub}}/resourcegroups/%2e%2e/%2e%2e/x?{API}"),
        get("encoded slash in name", f"/subscriptions/{{sub}}/resourcegroups/a%2Fb?{API}"),
        get("encoded slash PUT", f"/subscriptions/{{sub}}/resourcegroups/..%2F..%2Fx?{API}", method="PUT"),
        get("double encoding", f"/subscriptions/{{sub}}/resourcegroups/%252e%252e%252fx?{API}"),
        get("backslashes", f"/subscriptions/{{sub}}/resourcegroups/..\\..\\x?{API}", protocol=True),
        get("double slashes", f"//subscriptions//{{sub}}//resourcegroups//{{rg}}?{API}", (200,)),
        get("trailing slash", f"{RG}/?{API}", (200, 404)),
        get("NUL in path", f"/subscriptions/{{sub}}/resourcegroups/a%00b?{API}"),
        get("newline in path", f"/subscriptions/{{sub}}/resourcegroups/a%0Ab?{API}", method="PUT"),
        get("newline in provider path", f"{RG}/providers/Microsoft.Network/virtualNetworks/a%0D%0Ab?{API}"),
        get("bad UTF-8 percent", f"/subscriptions/{{sub}}/resourcegroups/%ff%fe?{API}"),
        get("invalid percent", f"/subscriptions/{{sub}}/resourcegroups/%zz%?{API}"),
        get("unicode name", f"/subscriptions/{{sub}}/resourcegroups/%E2%98%83?{API}", (404,)),
        get("100 KB path", f"/subscriptions/{{sub}}/resourcegroups/{long_name}?{API}", (400, 404, 414),
            protocol=True),
        get("1000 segments", "/subscriptions/{sub}/resourcegroups/{rg}" + "/providers/x" * 1000 + f"?{API}",
            (400, 404)),
        get("provider path dot-dot", f"{RG}/providers/Microsoft.Network/virtualNetworks/../../../x?{API}"),
        get("nonsense root", f"/..%2f..%2fetc%2fpasswd?{API}"),
        get("subscription garbage", f"/subscriptions/%3Cscript%3E?{API}", (400, 403, 404)),
        get("operations id dot-dot", f"/subscriptions/{{sub}}/providers/Microsoft.Resources/locations/local/"
                                     f"operations/..%2f..%2fx?{API}", (400, 404)),
        get("PROPFIND method", f"{RG}?{API}", (405, 400), method="PROPFIND"),
        get("TRACE method", f"{RG}?{API}", (405, 400), method="TRACE"),
        Case("raw bytes in path", "path", raw(b"GET /subscriptions/{sub}/resourcegroups/\xff\xfe?" + API.encode()
                                              + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                                              b"Authorization: Bearer {token}\r\n\r\n"), (400, 404), protocol=True),
        Case("absolute-form target", "path", raw(b"GET https://evil.example/subscriptions/{sub}?" + API.encode()
                                                 + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                                                 b"Authorization: Bearer {token}\r\n\r\n"), (200, 400, 404),
             protocol=True),
    ]


def _query_cases() -> list[Case]:
    def q(name: str, query: str, status: tuple[int, ...] = (400,), code: str | None = None,
          target: str = "/subscriptions/{sub}/resourcegroups", protocol: bool = False) -> Case:
        return Case(name, "query", request("GET", f"{target}?{query}"), status, code, protocol=protocol)

    return [
        q("huge $top", f"{API}&$top=" + "9" * 40, (200, 400)),
        q("$top beyond int digits limit", f"{API}&$top=" + "9" * 5000, (400,), "InvalidTopParameter"),
        q("negative $top", f"{API}&$top=-5", (400,), "InvalidTopParameter"),
        q("zero $top", f"{API}&$top=0", (400,), "InvalidTopParameter"),
        q("non-numeric $top", f"{API}&$top=abc", (400,), "InvalidTopParameter"),
        q("float $top", f"{API}&$top=1e3", (400,), "InvalidTopParameter"),
        q("unicode digits $top", f"{API}&$top=%D9%A3", (200, 400)),
        q("$top with spaces", f"{API}&$top=%20%205%20", (200, 400)),
        q("bad $skiptoken", f"{API}&$skiptoken=!!!", (400,), "InvalidSkipToken"),
        q("$skiptoken of bad UTF-8", f"{API}&$skiptoken={BAD_SKIP}", (400,), "InvalidSkipToken"),
        q("huge $skiptoken", f"{API}&$skiptoken=" + "A" * 200_000, (200, 400, 414), protocol=True),
        q("missing api-version", "", (400,), "MissingApiVersionParameter"),
        q("empty api-version", "api-version=", (400,), "MissingApiVersionParameter"),
        q("odd api-version", "api-version=latest", (400,), "InvalidApiVersionParameter"),
        q("api-version with NUL", "api-version=2024-11-01%00", (400,), "InvalidApiVersionParameter"),
        q("api-version upper case key", "API-VERSION=2024-11-01", (200,)),
        q("api-version twice", f"{API}&api-version=garbage", (200, 400)),
        q("api-version future", "api-version=2999-12-31-preview", (200,)),
        q("bad UTF-8 in query", f"{API}&$filter=%ff%fe", (200, 400)),
        q("invalid percent in query", f"{API}&$filter=%zz", (200, 400)),
        q("garbage $filter", f"{API}&$filter=((((((((((", (400,)),
        q("deep $filter", f"{API}&$filter=" + "(" * 5000 + "name%20eq%20'a'" + ")" * 5000, (400,)),
        q("$filter of 1000 ors", f"{API}&$filter=" + "%20or%20".join(["name%20eq%20'a'"] * 1000), (200, 400)),
        q("$filter of 5000 nots", f"{API}&$filter=" + "not%20" * 5000 + "name%20eq%20'a'", (400,)),
        q("$filter on resources", f"{API}&$filter=resourceType%20eq%20'" + "x" * 5000 + "'", (200, 400),
          target="/subscriptions/{sub}/resources"),
        q("10k parameters", API + "".join(f"&p{i}=v" for i in range(10_000)), (200, 400, 414), protocol=True),
        q("100 KB query", f"{API}&x=" + "y" * 100_000, (200, 400, 414), protocol=True),
        q("$expand garbage", f"{API}&$expand=%00%01", (200, 400), target=RG),
    ]


def _header_cases() -> list[Case]:
    def h(name: str, headers: list[tuple[str, str]], status: tuple[int, ...], code: str | None = None, *,
          auth: bool = True, protocol: bool = False, method: str = "GET", body: bytes | None = None) -> Case:
        return Case(name, "header", request(method, f"{RG}?{API}", headers, body, auth=auth), status, code,
                    protocol=protocol)

    return [
        h("no Authorization", [], (401,), "AuthenticationFailed", auth=False),
        h("Bearer alone", [("Authorization", "Bearer")], (401,), None, auth=False),
        h("Bearer and space", [("Authorization", "Bearer ")], (401,), None, auth=False),
        h("Bearer garbage", [("Authorization", "Bearer garbage")], (401,), "InvalidAuthenticationToken", auth=False),
        h("Bearer three dots", [("Authorization", "Bearer a.b.c")], (401,), "InvalidAuthenticationToken",
          auth=False),
        h("Bearer of JSON header", [("Authorization", "Bearer eyJhbGciOiJub25lIn0.e30.")], (401,),
          "InvalidAuthenticationToken", auth=False),
        h("Basic", [("Authorization", "Basic dXNlcjpwYXNz")], (401,), None, auth=False),
        h("lower-case bearer", [("Authorization", "bearer {token}")], (200, 401), None, auth=False),
        h("two Authorization headers", [("Authorization", "Bearer garbage")], (200, 401)),
        h("64 KB Authorization", [("Authorization", "Bearer " + "a" * 65_536)], (400, 401, 431), auth=False,
          protocol=True),
        h("64 KB custom header", [("x-ms-client-request-id", "a" * 65_536)], (200, 400, 431), protocol=True),
        h("500 headers", [(f"x-fuzz-{i}", "v") for i in range(500)], (200, 400, 431), protocol=True),
        h("Latin-1 header value", [("x-ms-client-request-id", "caf\xe9")], (200, 400), protocol=True),
        h("control chars in header", [("x-ms-client-request-id", "a\x01b")], (200, 400), protocol=True),
        h("Host garbage", [("Host", '"><script>')], (200, 400), protocol=True),
        h("Content-Length and chunked", [("Content-Length", "5"), ("Transfer-Encoding", "chunked")], (400,),
          method="PUT", body=b"0\r\n\r\n", protocol=True),
        h("Transfer-Encoding gzip, chunked", [("Transfer-Encoding", "gzip, chunked")], (400, 501), method="PUT",
          body=b"0\r\n\r\n", protocol=True),
        h("Transfer-Encoding identity", [("Transfer-Encoding", "identity"), ("Content-Length", "2")],
          (400, 501), method="PUT", body=b"{}", protocol=True),
        h("negative Content-Length", [("Content-Length", "-1")], (400,), method="PUT", body=b"{}", protocol=True),
        h("two Content-Lengths", [("Content-Length", "2"), ("Content-Length", "3")], (400,), method="PUT",
          body=b"{}", protocol=True),
        Case("short body for Content-Length", "header", request("PUT", f"{RG}?{API}", [("Content-Length", "100")],
                                                                  b'{"location":"local"}'), (400,), protocol=True,
             waits=True),
        h("Expect 100-continue", [("Expect", "100-continue")], (200, 201, 400, 417), method="PUT",
          body=b'{"location":"local"}'),
        h("Content-Encoding gzip", [("Content-Encoding", "gzip")], (200, 201, 400, 415), method="PUT",
          body=b"\x1f\x8b\x08\x00garbage"),
        h("X-HTTP-Method-Override", [("X-HTTP-Method-Override", "DELETE")], (200,)),
        Case("bad chunk size", "header", raw(b"PUT " + RG.encode() + b"?" + API.encode() + b" HTTP/1.1\r\n"
                                             b"Host: localhost\r\nConnection: close\r\n"
                                             b"Authorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n"
                                             b"zz\r\n{}\r\n0\r\n\r\n"), (400,), protocol=True),
        Case("not HTTP at all", "header", raw(b"\x16\x03\x01garbage\r\n\r\n"), (400,), protocol=True),
        Case("HTTP/0.9 request", "header", raw(b"GET /\r\n\r\n"), (400, 401, 404), protocol=True),
    ]


def cases() -> list[Case]:
    return [*_body_cases(), *_path_cases(), *_query_cases(), *_header_cases()]


def run(t: Target, case: Case) -> Answer | None:
    return send(t, case.build(t), timeout=5.0 if case.waits else TIMEOUT)


def violations(case: Case, answer: Answer | None) -> list[str]:
    """What is wrong with `answer` to `case` (empty: nothing)."""
    if answer is None and case.waits:
        return []
    if answer is None:
        return [f"timeout: no answer within {TIMEOUT:.0f}s"]
    problems = []
    if answer.status == 0:
        return ["closed without an answer"] if not case.protocol else []
    if answer.status >= 500:
        problems.append(f"5xx: {answer.status} {answer.body[:200]!r}")
    plain_protocol_refusal = case.protocol and answer.status == 400 and answer.error() is None
    if case.status and answer.status not in case.status and not plain_protocol_refusal:
        problems.append(f"status {answer.status}, expected one of {case.status}: {answer.body[:200]!r}")
    if answer.status >= 400 and not plain_protocol_refusal:
        err = answer.error()
        if err is None:
            problems.append(f"no ARM error envelope: {answer.body[:200]!r}")
        elif case.code and err["code"] != case.code:
            problems.append(f"code {err['code']}, expected {case.code}")
    return problems
