"""/metrics: the Prometheus text exposition of the daemon's registry."""

from __future__ import annotations


class MetricsResource:
    def __init__(self, metrics):
        self.metrics = metrics

    def render(self, request):
        body = self.metrics.render()
        request.setHeader(b"Content-Type", self.metrics.content_type.encode())
        request.setHeader(b"Content-Length", str(len(body)).encode())
        return b"" if request.method == b"HEAD" else body
