"""The demo models: their data sets (``data/``), their training (``training``, Django-free like
the runtime it trains for) and their seeding into the registry (``seed``)."""
