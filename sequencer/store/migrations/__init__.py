"""Schema migrations: tortoise-orm's own (`tortoise.migrations`), applied by `sequencer migrate`.

One module per schema change, NNNN_what.py, applied in order. After changing models.py, write
the next one with `.venv/bin/python -m sequencer.store.migrations what_changed`. Never edit or
remove one that has shipped: databases record them by name.
"""
