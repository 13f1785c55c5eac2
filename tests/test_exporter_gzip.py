"""/metrics compressed for clients that accept gzip (Prometheus sends `Accept-Encoding: gzip`
on every scrape; its real scrape of the agent is in test_exporter_prometheus.py): the same text
either way, plain for clients that do not ask or refuse it (q=0), and never with --no-gzip."""

from __future__ import annotations

import gzip
import http.client
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runqscale.exporter.families import RowFamily, label_string, render
from runqscale.exporter.server import MetricsServer, Registry, accepts_gzip, gzipped


class Containers:
    """A family of 2000 labelled gauges: a body of several rendered pieces."""

    def collect(self) -> Iterator[RowFamily]:
        fam = RowFamily("rq_demo", "doc", "gauge", ("container",))
        for i in range(2000):
            fam.add((f"c{i}",), label_string(("container",), (f"c{i}",)), i / 7)
        yield fam


def _server(compress: bool) -> MetricsServer:
    registry = Registry()
    registry.register(Containers())
    server = MetricsServer(("127.0.0.1", 0), registry, healthy=lambda: True, gzip=compress)
    server.serve_in_thread()
    return server


def _get(server: MetricsServer, accept: str | None) -> tuple[str | None, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    conn.request("GET", "/metrics", headers={"Accept-Encoding": accept} if accept else {})
    r = conn.getresponse()
    body = r.read()
    conn.close()
    assert r.status == 200
    return r.getheader("Content-Encoding"), body


@pytest.mark.parametrize(("compress", "accept", "zipped"), [
    (True, "gzip", True),
    (True, "deflate, gzip;q=0.5", True),
    (True, "*", True),
    (True, None, False),
    (True, "gzip;q=0", False),
    (True, "identity", False),
    (False, "gzip", False),
])
def test_metrics_are_gzipped_only_when_asked_and_allowed(compress: bool, accept: str | None,
                                                         zipped: bool) -> None:
    server = _server(compress)
    try:
        encoding, body = _get(server, accept)
    finally:
        server.shutdown()
        server.server_close()
    plain = render(Containers().collect())
    if zipped:
        assert encoding == "gzip"
        assert gzip.decompress(body) == plain
        assert len(body) < len(plain) / 5
    else:
        assert encoding is None and body == plain


@given(st.lists(st.binary(max_size=3000), max_size=20))
def test_gzipped_pieces_are_one_stream_of_their_concatenation(pieces: list[bytes]) -> None:
    assert gzip.decompress(b"".join(gzipped(iter(pieces)))) == b"".join(pieces)


@pytest.mark.parametrize(("header", "gzip_ok"), [
    ("gzip", True),
    ("GZIP", True),
    ("x-gzip", True),
    ("br;q=1.0, gzip;q=0.8, *;q=0.1", True),
    ("gzip;q=0, *", False),  # the coding's own weight wins over the wildcard's
    ("*;q=0.5", True),
    ("*;q=0", False),
    ("gzip;q=0;x=1", False),
    ("gzip ; q=0.000", False),
    ("deflate, br", False),
    ("", False),
])
def test_accept_encoding_weights(header: str, gzip_ok: bool) -> None:
    assert accepts_gzip(header) is gzip_ok
