"""Training: ``loop`` (``train(config)``), the run's ``state``, one ``step``, loss ``terms``,
``data`` (faces, pairs, batches), ``logs``, ``health`` checks, self-describing ``checkpoint``s,
the weight average (``ema``), ``offline`` mining, LR ``schedule``s and DDP setup (``distributed``)."""
