"""Training shared by every engine: the loop (loop.py), data, losses, metrics, optimizer rules,
schedules, and the Python API (nnc.fit / evaluate / predict in api.py).

The loop asks an engine for each step (loop.make_engine imports the engine it is given by name).
"""
