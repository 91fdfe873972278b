"""Engines turn a prepared page and a request into the model's answer."""

from dotsocr.engines.base import Engine, EngineAnswer

__all__ = ["Engine", "EngineAnswer"]
