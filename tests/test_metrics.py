"""Metrics registry and the HTTP endpoint, scraped over real HTTP like Prometheus would."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from anprd.config.service import MetricsConfig
from anprd.metrics import Metrics, MetricsServer, MetricsServerError, start_metrics_server

FAST_STOP_S = 0.02  # serving-thread poll interval: keeps stop() quick in tests


def fetch(url: str, accept: str | None = None) -> tuple[int, str, str]:
    """(status, content type, body) without raising on 4xx/5xx."""
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read().decode()


def scrape(server: MetricsServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as {(sample name, sorted labels): value}."""
    status, _, body = fetch(server.url + "/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def server(metrics: Metrics) -> Iterator[MetricsServer]:
    with MetricsServer(metrics, "127.0.0.1", 0, poll_interval_s=FAST_STOP_S) as running:
        yield running


CAM = (("camera", "gate1"),)


def test_counters_gauges_and_histogram_over_http(metrics: Metrics, server: MetricsServer) -> None:
    metrics.add_camera("gate1")
    samples = scrape(server)
    assert samples[("anprd_frames_read_total", CAM)] == 0  # series exist before the first frame
    assert samples[("anprd_camera_up", CAM)] == 0

    metrics.observe_source("gate1", frames_read=10, frames_dropped=2, reconnects=1, queue_depth=3)
    metrics.observe_source("gate1", frames_read=15, frames_dropped=2, reconnects=1, queue_depth=0)
    metrics.frame_processed("gate1", inference_s=0.03)
    metrics.frame_processed("gate1", inference_s=2.0)
    metrics.frame_processed("gate1")
    metrics.frame_failed("gate1")
    metrics.event_published("gate1")
    metrics.set_active_tracks("gate1", 2)
    metrics.set_camera_up("gate1", True)

    samples = scrape(server)
    assert samples[("anprd_frames_read_total", CAM)] == 15
    assert samples[("anprd_frames_dropped_total", CAM)] == 2
    assert samples[("anprd_reconnects_total", CAM)] == 1
    assert samples[("anprd_queue_depth", CAM)] == 0
    assert samples[("anprd_frames_processed_total", CAM)] == 3
    assert samples[("anprd_frames_failed_total", CAM)] == 1
    assert samples[("anprd_events_published_total", CAM)] == 1
    assert samples[("anprd_active_tracks", CAM)] == 2
    assert samples[("anprd_camera_up", CAM)] == 1
    assert samples[("anprd_inference_seconds_count", CAM)] == 2
    assert samples[("anprd_inference_seconds_bucket", (("camera", "gate1"), ("le", "0.035")))] == 1
    assert samples[("anprd_inference_seconds_bucket", (("camera", "gate1"), ("le", "0.005")))] == 0
    assert samples[("anprd_inference_seconds_bucket", (("camera", "gate1"), ("le", "+Inf")))] == 2
    assert samples[("anprd_build_info", (("version", "0.1.0"),))] == 1
    assert ("process_resident_memory_bytes", ()) in samples


def test_source_counter_reset_counts_from_zero(metrics: Metrics, server: MetricsServer) -> None:
    metrics.observe_source("gate1", frames_read=100, frames_dropped=5, reconnects=2)
    # The grabber was re-created (reload): its totals restart, the Prometheus counter must not drop.
    metrics.observe_source("gate1", frames_read=4, frames_dropped=0, reconnects=0)
    samples = scrape(server)
    assert samples[("anprd_frames_read_total", CAM)] == 104
    assert samples[("anprd_frames_dropped_total", CAM)] == 5
    assert samples[("anprd_reconnects_total", CAM)] == 2

    metrics.reset_source("gate1")  # told explicitly: a new grabber that already read 50 frames
    metrics.observe_source("gate1", frames_read=50, frames_dropped=0, reconnects=0)
    assert scrape(server)[("anprd_frames_read_total", CAM)] == 154


def test_remove_camera_drops_its_series(metrics: Metrics, server: MetricsServer) -> None:
    metrics.add_camera("gate1")
    metrics.add_camera("gate2")
    metrics.remove_camera("gate2")
    metrics.remove_camera("never-added")
    cameras = {dict(labels).get("camera") for (name, labels) in scrape(server) if name.startswith("anprd_")}
    assert cameras == {"gate1", None}


def test_health_and_readiness(metrics: Metrics, server: MetricsServer) -> None:
    assert fetch(server.url + "/healthz")[::2] == (200, "ok\n")
    assert fetch(server.url + "/ready")[::2] == (503, "not ready: starting\n")
    assert scrape(server)[("anprd_ready", ())] == 0

    metrics.set_ready()
    assert fetch(server.url + "/ready")[::2] == (200, "ready\n")
    assert scrape(server)[("anprd_ready", ())] == 1

    metrics.set_not_ready("draining")
    assert fetch(server.url + "/ready")[::2] == (503, "not ready: draining\n")
    assert fetch(server.url + "/nope")[0] == 404


def test_openmetrics_negotiation(server: MetricsServer) -> None:
    status, content_type, body = fetch(
        server.url + "/metrics", accept="application/openmetrics-text; version=1.0.0"
    )
    assert status == 200
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")


def test_registries_are_independent() -> None:
    first, second = Metrics(process_metrics=False), Metrics(process_metrics=False)
    first.event_published("gate1")
    assert first.registry.get_sample_value("anprd_events_published_total", {"camera": "gate1"}) == 1
    assert second.registry.get_sample_value("anprd_events_published_total", {"camera": "gate1"}) is None


def test_port_in_use_names_the_address(metrics: Metrics) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MetricsServerError, match=rf"127\.0\.0\.1:{port}: address already in use"):
            MetricsServer(metrics, "127.0.0.1", port, poll_interval_s=FAST_STOP_S).start()


def test_stop_releases_the_port(metrics: Metrics) -> None:
    server = MetricsServer(metrics, "127.0.0.1", 0, poll_interval_s=FAST_STOP_S).start()
    port = server.port
    server.stop()
    server.stop()  # idempotent
    with MetricsServer(
        metrics, "127.0.0.1", port, poll_interval_s=FAST_STOP_S
    ) as again:  # rebinding right away works
        assert fetch(again.url + "/healthz")[0] == 200


def test_ipv6_loopback(metrics: Metrics) -> None:
    try:  # the host's IPv6, not the server, decides whether this can run (containers often lack it)
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as error:
        pytest.skip(f"no IPv6 loopback here: {error}")
    server = MetricsServer(metrics, "::1", 0, poll_interval_s=FAST_STOP_S).start()
    with server:
        assert server.url.startswith("http://[::1]:")
        assert fetch(server.url + "/healthz")[0] == 200


def test_start_from_config(metrics: Metrics) -> None:
    assert start_metrics_server(metrics, MetricsConfig(enabled=False)) is None
    server = start_metrics_server(metrics, MetricsConfig(port=0))
    assert server is not None
    with server:
        assert fetch(server.url + "/healthz")[0] == 200


def test_metrics_config() -> None:
    config = MetricsConfig()
    assert (config.enabled, config.address, config.port) == (True, "127.0.0.1", 9108)
    assert MetricsConfig(address="::").address == "::"
    with pytest.raises(ValidationError, match="must be an IP address"):
        MetricsConfig(address="localhost")
    with pytest.raises(ValidationError):
        MetricsConfig(port=70000)
