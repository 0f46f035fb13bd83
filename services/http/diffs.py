"""/diffs/<from>--<to>.rdiff: a cached librsync delta, or 503 + Retry-After while it builds."""

from __future__ import annotations

from bootserverd.images.diffs import SUFFIX, split_pair
from bootserverd.model.objects import SAFE_IMAGE_NAME
from services.http.files import FileSender
from services.http.util import send_error


class DiffResource:
    def __init__(self, cache, sender: FileSender):
        self.cache = cache
        self.sender = sender

    def render(self, request, parts: list[str]):
        if len(parts) != 1 or not parts[0].endswith(SUFFIX):
            return send_error(request, 404, "diffs are /diffs/<from>--<to>.rdiff")
        pair = split_pair(parts[0][:-len(SUFFIX)], lambda n: self.cache.images.get(n) is not None)
        if pair is None or not all(SAFE_IMAGE_NAME.match(n) for n in pair):
            return send_error(request, 404, "no diff: name the pair as <from>--<to>.rdiff with published images")
        return self.sender.send_cached(request, self.cache.lookup(*pair), f"the diff {pair[0]} → {pair[1]}")
