"""The HTTP snapshot store: a FastAPI app over a pluggable storage backend.

- ``app``: ``create_app(settings)``, the app factory (its lifespan opens the store);
- ``settings``: ``Settings``, from arguments or ``RNGVAULT_*`` environment variables;
- ``routes/``: one router per resource (snapshots, runs, operations);
- ``auth`` and ``tokens``: bearer tokens, each with grants (a scope and a namespace pattern);
- ``metrics``: Prometheus counters;
- ``storage/``: the ``Store`` protocol and its backends.

Nothing here is imported by ``import rngvault``: the server needs the ``server`` extra.
"""
