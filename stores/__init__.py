"""Redis stores shared by workers and receivers: per-message context and short links.

Each store has a Redis implementation (production) and an in-memory one (one process: the
embedded ``memory://`` mode and unit tests).
"""
