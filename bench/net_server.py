#!/usr/bin/env python3
"""Host side of bench/net.sh: fixtures on 127.0.0.1 that time transfers themselves, so the
figures do not include starting a command in the box.

  net_server.py serve DOWN_BYTES UP_BYTES
      Listens on three ephemeral ports of 127.0.0.1 and prints "ports SOURCE SINK HTTP"
      first, then one line per connection:
      SOURCE: sends DOWN_BYTES bytes, half-closes, and waits for the client to close
              (so all bytes have arrived); "source BYTES SECONDS", from accept to close.
      SINK:   reads UP_BYTES bytes (or until EOF) and closes; "sink BYTES SECONDS", from
              accept to the last byte.
      HTTP:   answers `GET /BYTES/TAG` with BYTES bytes (HTTP/1.0) and closes;
              "http TAG BYTES ACCEPTED_AT", ACCEPTED_AT on the monotonic clock.
  net_server.py fetch PORT BYTES
      Connects to 127.0.0.1:PORT (a published port; retried while nothing listens in the
      box), reads BYTES bytes and closes; prints the seconds from the first byte to the
      last.
  net_server.py push PORT BYTES
      Connects likewise, sends BYTES bytes, half-closes and waits for the box to close;
      prints the seconds from the first byte sent to the box's close.
"""

import select
import socket
import sys
import threading
import time

CHUNK = 1 << 20
ZEROS = bytes(CHUNK)


def log(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def listener():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    return s


def http(conn):
    t0 = time.monotonic()
    req = b""
    while b"\r\n\r\n" not in req and len(req) < 8192:
        d = conn.recv(4096)
        if not d:
            return
        req += d
    parts = req.split(b" ", 2)[1].decode().strip("/").split("/") + ["-"]
    n = int(parts[0])
    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
    send_zeros(conn, n)
    log("http %s %d %.6f" % (parts[1], n, t0))


def send_zeros(conn, n):
    view = memoryview(ZEROS)
    while n > 0:
        k = min(n, CHUNK)
        conn.sendall(view[:k])
        n -= k


def source(conn, n):
    t0 = time.monotonic()
    send_zeros(conn, n)
    conn.shutdown(socket.SHUT_WR)
    while conn.recv(4096):
        pass
    log("source %d %.6f" % (n, time.monotonic() - t0))


def drain(conn, got, want):
    """Receive until `want` bytes in all (`got` already) or the peer closes."""
    buf = bytearray(CHUNK)
    while got < want:
        k = conn.recv_into(buf)
        if k == 0:
            break
        got += k
    return got


def sink(conn, want):
    t0 = time.monotonic()
    got = drain(conn, 0, want)
    log("sink %d %.6f" % (got, time.monotonic() - t0))


def serve(down_bytes, up_bytes):
    src, s, h = listener(), listener(), listener()
    log("ports %d %d %d" % tuple(x.getsockname()[1] for x in (src, s, h)))

    def loop(sock, fn, *args):
        while True:
            conn, _ = sock.accept()

            def run(c=conn):
                try:
                    fn(c, *args)
                except OSError:
                    pass
                finally:
                    c.close()

            threading.Thread(target=run, daemon=True).start()

    threading.Thread(target=loop, args=(src, source, down_bytes), daemon=True).start()
    threading.Thread(target=loop, args=(s, sink, up_bytes), daemon=True).start()
    loop(h, http)


def connect_box(port, probe):
    """A connection to a published port that the box accepted. While nothing listens in
    the box, the helper closes each connection at once: retry for up to 30 seconds."""
    deadline = time.monotonic() + 30
    while True:
        c = socket.create_connection(("127.0.0.1", port))
        try:
            first = probe(c)
            if first is not None:
                return c, first
        except OSError:
            pass
        c.close()
        if time.monotonic() > deadline:
            sys.exit("nothing listened in the box on port %d" % port)
        time.sleep(0.2)


def fetch(port, want):
    c, first = connect_box(port, lambda c: c.recv(CHUNK) or None)
    t0 = time.monotonic()
    got = drain(c, len(first), want)
    t = time.monotonic() - t0
    c.close()
    if got < want:
        sys.exit("short read: %d of %d bytes" % (got, want))
    print("%.6f" % t)


def quiet(c):
    """None if the peer closed the connection within half a second."""
    r, _, _ = select.select([c], [], [], 0.5)
    return None if r and not c.recv(1) else b""


def push(port, n):
    c, _ = connect_box(port, quiet)
    t0 = time.monotonic()
    send_zeros(c, n)
    c.shutdown(socket.SHUT_WR)
    while c.recv(4096):
        pass
    print("%.6f" % (time.monotonic() - t0))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "serve":
        serve(int(sys.argv[2]), int(sys.argv[3]))
    elif cmd == "fetch":
        fetch(int(sys.argv[2]), int(sys.argv[3]))
    elif cmd == "push":
        push(int(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit(__doc__)
