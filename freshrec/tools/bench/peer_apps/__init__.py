"""Peer serving frameworks (Ray Serve, BentoML, LitServe, KServe) serving FreshRec's champion for ``freshrec bench peers``.

Every adapter answers ``POST /v1/recommend`` with FreshRec's contract and does FreshRec's per-request work through
:class:`freshrec.tools.bench.peer_apps.recommender.Recommender`, so the benchmark compares the serving frameworks,
not the ranking code. The adapters run in the peers venv (``freshrec.tools.bench.peers`` builds it), never in the
main one: the peer packages pin their own web stacks. ``configs`` says how each one is configured.
"""
