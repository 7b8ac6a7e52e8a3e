#!/usr/bin/env python3
"""An outside probe of `shipsec serve`, written as a user's security test would be: the
standard library only, raw sockets where a well-behaved client library would hide what
is being probed.

Usage: probe.py CHECK --api HOST:PORT [--workers HOST:PORT] [--token T] [--cap N]
                [--header-timeout S] [--idle-timeout S]

Each check prints one JSON object on stdout ({"check": ..., "ok": bool, ...facts}) and
exits 0 when it held, 1 when it did not. `tests/probe.rs` starts the server and runs it.
"""

import argparse
import json
import socket
import struct
import sys
import threading
import time
import urllib.error
import urllib.request


def split(addr):
    host, port = addr.rsplit(":", 1)
    return host, int(port)


def connect(addr):
    return socket.create_connection(split(addr), timeout=30)


def closed_after(sock, limit):
    """Seconds until the peer closes `sock` (reads give EOF or a reset), or None when it
    is still open after `limit` seconds. What it sends first is returned too."""
    start = time.monotonic()
    sock.settimeout(0.2)
    got = b""
    while time.monotonic() - start < limit:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - start, got
        if not chunk:
            return time.monotonic() - start, got
        got += chunk
    return None, got


def request(args, method, path, body=None, headers=None, token=True):
    """An HTTP request through urllib: (status, parsed JSON body or text)."""
    url = "http://%s%s" % (args.api, path)
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token and args.token:
        req.add_header("Authorization", "Bearer " + args.token)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=30) as answer:
            status, raw, ctype = answer.status, answer.read(), answer.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        status, raw, ctype = e.code, e.read(), e.headers.get("Content-Type", "")
    try:
        return status, json.loads(raw), ctype
    except ValueError:
        return status, raw.decode("utf-8", "replace"), ctype


def authed_requests_work(args, stop, results):
    """Authenticated requests, one after another until `stop`: each must answer 200."""
    while not stop.is_set():
        try:
            status, _, _ = request(args, "GET", "/v1/runs?limit=1")
            results.append(status)
        except Exception as e:  # noqa: BLE001 - any failure is a fact for the report
            results.append(repr(e))
        time.sleep(0.05)


def slow_and_idle(args, addr, preface):
    """Idle sockets and sockets that send a byte at a time are closed at the header-read
    timeout, while authenticated requests keep working."""
    stop = threading.Event()
    answers = []
    worker = threading.Thread(target=authed_requests_work, args=(args, stop, answers))
    worker.start()
    idle = [connect(addr) for _ in range(5)]
    slow = [connect(addr) for _ in range(5)]
    closes = {}

    def dribble(i, sock):
        start = time.monotonic()
        for byte in preface:
            try:
                sock.send(bytes([byte]))
            except OSError:
                break
            time.sleep(0.25)
            if time.monotonic() - start > args.header_timeout * 4 + 5:
                break
        took, _ = closed_after(sock, args.header_timeout * 4 + 5 - (time.monotonic() - start))
        closes["slow%d" % i] = None if took is None else round(time.monotonic() - start, 3)

    threads = [threading.Thread(target=dribble, args=(i, s)) for i, s in enumerate(slow)]
    for t in threads:
        t.start()
    start = time.monotonic()
    for i, sock in enumerate(idle):
        took, _ = closed_after(sock, args.header_timeout * 4 + 5 - (time.monotonic() - start))
        closes["idle%d" % i] = None if took is None else round(time.monotonic() - start, 3)
    for t in threads:
        t.join()
    stop.set()
    worker.join()
    limit = args.header_timeout * 4 + 5
    ok = all(v is not None and v < limit for v in closes.values())
    ok = ok and len(answers) > 0 and all(a == 200 for a in answers)
    return {"ok": ok, "closedAfterSeconds": closes, "authedAnswers": len(answers),
            "authedFailures": [a for a in answers if a != 200][:5]}


def check_api_slow(args):
    return slow_and_idle(args, args.api, b"GET /v1/runs HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: 1\r\n" * 100)


def check_workers_slow(args):
    return slow_and_idle(args, args.workers, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\0" * 100)


def check_api_idle_after_request(args):
    """A keep-alive connection is closed at the idle timeout after its last answer."""
    sock = connect(args.api)
    head = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    sock.sendall(head.encode())
    sock.settimeout(10)
    first = sock.recv(65536)
    took, _ = closed_after(sock, args.idle_timeout * 4 + 5)
    ok = first.startswith(b"HTTP/1.1 200") and took is not None
    return {"ok": ok, "closedAfterSeconds": took}


def check_cap(args):
    """Past the cap a connection is answered 503 TOO_MANY_CONNECTIONS and closed; the
    server is whole afterwards (its journal untouched: runs start and finish)."""
    held = [connect(args.api) for _ in range(args.cap)]
    # The held sockets are idle: the extra one comes long before their header-read timeout.
    extra = connect(args.api)
    took, answer = closed_after(extra, 10)
    refused = answer.split(b"\r\n", 1)[0]
    body = answer.split(b"\r\n\r\n", 1)[-1]
    for sock in held:
        sock.close()
    # The cap frees as the held sockets go; then the server works as before.
    deadline = time.monotonic() + 30
    status = None
    while time.monotonic() < deadline:
        try:
            status, _, _ = request(args, "GET", "/readyz", token=False)
            if status == 200:
                break
        except OSError:
            pass
        time.sleep(0.1)
    definition = {"title": "after the cap", "actions": [
        {"ref": "a", "componentId": "core.echo", "params": {"text": "hi"}}]}
    run_status, run, _ = request(args, "POST", "/v1/runs", {"definition": definition})
    result_status, result, _ = request(args, "GET", "/v1/runs/%s/result?wait=60" % run.get("runId"))
    ok = (refused.startswith(b"HTTP/1.1 503") and b"TOO_MANY_CONNECTIONS" in body
          and took is not None and status == 200 and run_status == 201
          and result_status == 200 and result.get("status") == "COMPLETED")
    return {"ok": ok, "refusal": refused.decode("latin-1"), "readyz": status,
            "runAfter": result.get("status") if isinstance(result, dict) else result}


def h2_frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def hpack_literal(name, value):
    """A literal header field without indexing, new name, no Huffman coding."""
    def string(s):
        s = s.encode()
        assert len(s) < 127
        return bytes([len(s)]) + s
    return b"\x00" + string(name) + string(value)


def check_workers_unauthenticated_body(args):
    """A gRPC call without a token that announces a 64 MiB message is answered (the
    stream ended by the server) before the message is sent, for 32 calls at once."""
    sock = connect(args.workers)
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0, b""))
    headers = b"".join(hpack_literal(n, v) for n, v in [
        (":method", "POST"), (":scheme", "http"), (":path", "/shipsec.worker.v1.Worker/Complete"),
        (":authority", args.workers), ("content-type", "application/grpc"), ("te", "trailers")])
    streams = list(range(1, 64, 2))
    for stream in streams:
        sock.sendall(h2_frame(1, 4, stream, headers))  # HEADERS, END_HEADERS
        prefix = b"\x00" + struct.pack(">I", 64 << 20)
        sock.sendall(h2_frame(0, 0, stream, prefix + b"x" * 1000))  # DATA, more to come
    ended = set()
    sock.settimeout(1)
    buf = b""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(ended) < len(streams):
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            break
        buf += chunk
        while len(buf) >= 9:
            length = struct.unpack(">I", b"\0" + buf[:3])[0]
            if len(buf) < 9 + length:
                break
            kind, flags = buf[3], buf[4]
            stream = struct.unpack(">I", buf[5:9])[0] & 0x7FFFFFFF
            if kind == 4 and not flags & 1:
                sock.sendall(h2_frame(4, 1, 0, b""))  # SETTINGS ack
            if (kind == 1 and flags & 1) or kind == 3:  # trailers-only HEADERS, or RST_STREAM
                ended.add(stream)
            buf = buf[9 + length:]
    ok = ended == set(streams)
    return {"ok": ok, "streams": len(streams), "endedByServer": len(ended)}


def check_dns_rebinding(args):
    """A tokenless server answers only Host values naming loopback or its listen address."""
    bad_status, bad, _ = request(args, "GET", "/v1/runs", headers={"Host": "rebound.example:80"}, token=False)
    good_status, _, _ = request(args, "GET", "/v1/runs", headers={"Host": "localhost:%d" % split(args.api)[1]}, token=False)
    code = bad.get("error", {}).get("code") if isinstance(bad, dict) else bad
    ok = bad_status == 403 and code == "HOST_NOT_ALLOWED" and good_status == 200
    return {"ok": ok, "rebound": [bad_status, code], "loopback": good_status}


def check_declared_length(args):
    """A Content-Length over the limit is answered 413 at once, before any body is sent."""
    sock = connect(args.api)
    head = ("POST /v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
            "Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n" % args.token)
    start = time.monotonic()
    sock.sendall(head.encode())
    sock.settimeout(10)
    answer = b""
    try:
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    except socket.timeout:
        pass
    took = time.monotonic() - start
    ok = answer.startswith(b"HTTP/1.1 413") and took < 10
    return {"ok": ok, "status": answer.split(b"\r\n", 1)[0].decode("latin-1"), "seconds": round(took, 3)}


def raw(args, head):
    """Sends a raw request head; (status line, body)."""
    sock = connect(args.api)
    sock.sendall(head)
    _, answer = closed_after(sock, 10)
    status = answer.split(b"\r\n", 1)[0].decode("latin-1")
    body = answer.split(b"\r\n\r\n", 1)[-1] if b"\r\n\r\n" in answer else b""
    return status, body


def check_defects(args):
    """The smaller defects: each answer has the documented status and JSON shape."""
    echo = {"title": "t", "actions": [{"ref": "a", "componentId": "core.echo", "params": {"text": "x"}}]}
    found = {}

    def code(answer):
        status, body, ctype = answer
        error = body.get("error", {}) if isinstance(body, dict) else {}
        return [status, error.get("code"), "json" if "json" in ctype else ctype]

    for run_id in [".", ".."]:
        found["runId " + run_id] = code(request(args, "POST", "/v1/runs", {"definition": echo, "runId": run_id}))
    found["Idempotency-Key with a space"] = code(request(
        args, "POST", "/v1/runs", {"definition": echo}, headers={"Idempotency-Key": "a b"}))
    status, body, _ = request(args, "POST", "/v1/runs", {"definition": echo})
    run = body["runId"]
    request(args, "GET", "/v1/runs/%s/result?wait=30" % run)
    for value in ["+3", "9223372036854775808", "1 2"]:
        found["Last-Event-ID " + value] = code(request(
            args, "GET", "/v1/runs/%s/events" % run, headers={"Last-Event-ID": value}))
    found["Last-Event-ID ' 2 '"] = code(request(
        args, "GET", "/v1/runs/%s/events" % run, headers={"Last-Event-ID": " 2 "}))
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    for name, tp in [("version ff", "ff-%s-00f067aa0ba902b7-01" % trace),
                     ("short span id", "00-%s-00f067aa0ba902-01" % trace),
                     ("upper case", "00-%s-00f067aa0ba902b7-01" % trace.upper())]:
        found["traceparent " + name] = code(request(
            args, "POST", "/v1/runs", {"definition": echo, "traceparent": tp}))
    found["path id of invalid UTF-8"] = code(request(args, "GET", "/v1/runs/%FF%FE"))
    sleep = {"title": "t", "actions": [{"ref": "a", "componentId": "core.sleep", "params": {"ms": 1e38}}]}
    found["core.sleep ms 1e38"] = code(request(args, "POST", "/v1/runs", {"definition": sleep}))
    many = {"title": "t", "actions": [{"ref": "a%d" % i, "componentId": "no.such"} for i in range(3000)]}
    status, body, ctype = request(args, "POST", "/v1/validate", {"definition": many})
    details = body.get("error", {}).get("details", {}) if isinstance(body, dict) else {}
    found["3,000 problems"] = [status, len(details.get("problems", [])), details.get("omittedProblems")]
    # What the HTTP library answers itself (documented): a bare 4xx, no JSON.
    found["DEL byte in a header"] = list(raw(args, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n"))[:1]
    found["100,000-character id"] = list(raw(
        args, b"GET /v1/runs/" + b"a" * 100000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"))[:1]
    expected = {
        "runId .": [400, "INVALID_REQUEST", "json"],
        "runId ..": [400, "INVALID_REQUEST", "json"],
        "Idempotency-Key with a space": [400, "INVALID_REQUEST", "json"],
        "Last-Event-ID +3": [400, "INVALID_REQUEST", "json"],
        "Last-Event-ID 9223372036854775808": [400, "INVALID_REQUEST", "json"],
        "Last-Event-ID 1 2": [400, "INVALID_REQUEST", "json"],
        "traceparent version ff": [400, "INVALID_REQUEST", "json"],
        "traceparent short span id": [400, "INVALID_REQUEST", "json"],
        "traceparent upper case": [400, "INVALID_REQUEST", "json"],
        "path id of invalid UTF-8": [400, "INVALID_REQUEST", "json"],
        "core.sleep ms 1e38": [422, "INVALID_DEFINITION", "json"],
        "3,000 problems": [422, 100, 2900],
    }
    wrong = {k: [found.get(k), v] for k, v in expected.items() if found.get(k) != v}
    ok_spaces = found["Last-Event-ID ' 2 '"][0] == 200
    ok_library = all(found[k][0].split(" ")[1].startswith("4") for k in ["DEL byte in a header", "100,000-character id"])
    return {"ok": not wrong and ok_spaces and ok_library, "wrong": wrong, "found": found}


CHECKS = {
    "defects": check_defects,
    "api-slow": check_api_slow,
    "workers-slow": check_workers_slow,
    "api-idle": check_api_idle_after_request,
    "cap": check_cap,
    "workers-unauthenticated": check_workers_unauthenticated_body,
    "dns-rebinding": check_dns_rebinding,
    "declared-length": check_declared_length,
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("check", choices=sorted(CHECKS))
    parser.add_argument("--api", required=True)
    parser.add_argument("--workers")
    parser.add_argument("--token", default="")
    parser.add_argument("--cap", type=int, default=0)
    parser.add_argument("--header-timeout", type=float, default=1.0)
    parser.add_argument("--idle-timeout", type=float, default=1.0)
    args = parser.parse_args()
    report = CHECKS[args.check](args)
    report["check"] = args.check
    print(json.dumps(report))
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
