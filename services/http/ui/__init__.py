"""The status page for people (/ and /ui/...): server-rendered HTML and inline SVG, no JavaScript.

``view`` turns what the daemon knows (model, boot report, services' status) into rows, ``html``
and ``svg`` render them (pure, everything escaped), ``access`` decides who may look, and
``resource`` is the twisted.web side that gathers the inputs and sends the page.
"""
