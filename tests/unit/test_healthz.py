"""/healthz (keepalived's track_script): fit only while every enabled service runs; the peer
comparison never makes a server unfit."""

from services.http.service import unhealthy


def test_down_services_are_named_and_the_peer_does_not_count():
    up = {"up": True}
    assert unhealthy({"services": {"http": up, "nbd": up, "dhcp": up, "peer": {"up": False}}}) == []
    assert unhealthy({"services": {"http": up, "nbd": {"up": False}, "dhcp": {"up": False}}}) == \
        ["dhcp", "nbd"]
    assert unhealthy({}) == []
