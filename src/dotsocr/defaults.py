"""Defaults shared by the library's options and the CLI's flags, kept free of imports."""

DPI = 200.0
"""PDF render resolution: what dots.ocr's own parser and olmOCR-bench use."""

MAX_IMAGE_PIXELS = 178_956_970
"""Refuse images or renders larger than this (Pillow's own decompression-bomb threshold)."""

SERVER_URL = "http://127.0.0.1:8000"
"""Where the commands that look at a model server look when told nothing (vLLM's port)."""

SERVER_TIMEOUT = 600.0
"""Seconds a model server that does not answer is waited for before pages fail: loading a
model on a GPU takes minutes, and ``dotsocr serve`` restarts a crashed one."""
