"""The Python implementations the compiled state layer (``native/``) replaced.

They are not shipped: they live here as the independent oracles of the differential
tests (``tests/test_native_*.py``), which check that the Rust code gives the same
answers and writes the same bytes as these did, on random tables and histories.
"""
