"""dotsocr: document OCR with the dots.ocr vision-language model.

The names below load on first use, so that ``dotsocr --help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "AsyncClient": "dotsocr.client",
    "AuthenticationError": "dotsocr.errors",
    "BadRequest": "dotsocr.errors",
    "CATEGORIES": "dotsocr.layout",
    "Cell": "dotsocr.layout",
    "Client": "dotsocr.client",
    "ConfigError": "dotsocr.errors",
    "ContextTooLong": "dotsocr.errors",
    "CorruptDocument": "dotsocr.errors",
    "DocumentError": "dotsocr.errors",
    "DocumentOptions": "dotsocr.document",
    "DocumentResult": "dotsocr.layout",
    "DocumentTooLarge": "dotsocr.errors",
    "DotsOCRError": "dotsocr.errors",
    "EmptyDocument": "dotsocr.errors",
    "EngineError": "dotsocr.errors",
    "EngineTimeout": "dotsocr.errors",
    "EngineUnavailable": "dotsocr.errors",
    "ImageRefused": "dotsocr.errors",
    "ModelNotServed": "dotsocr.errors",
    "NotADocument": "dotsocr.errors",
    "OutputError": "dotsocr.errors",
    "Page": "dotsocr.document",
    "PageFailure": "dotsocr.document",
    "PageResult": "dotsocr.layout",
    "PageSelectionError": "dotsocr.errors",
    "PageStatus": "dotsocr.layout",
    "PageTooExtreme": "dotsocr.errors",
    "PasswordError": "dotsocr.errors",
    "UnknownModel": "dotsocr.errors",
    "get_profile": "dotsocr.models",
    "open_document": "dotsocr.document",
}

__all__ = [
    "CATEGORIES",
    "AsyncClient",
    "AuthenticationError",
    "BadRequest",
    "Cell",
    "Client",
    "ConfigError",
    "ContextTooLong",
    "CorruptDocument",
    "DocumentError",
    "DocumentOptions",
    "DocumentResult",
    "DocumentTooLarge",
    "DotsOCRError",
    "EmptyDocument",
    "EngineError",
    "EngineTimeout",
    "EngineUnavailable",
    "ImageRefused",
    "ModelNotServed",
    "NotADocument",
    "OutputError",
    "Page",
    "PageFailure",
    "PageResult",
    "PageSelectionError",
    "PageStatus",
    "PageTooExtreme",
    "PasswordError",
    "UnknownModel",
    "__version__",
    "get_profile",
    "open_document",
]

if TYPE_CHECKING:
    from dotsocr.client import AsyncClient, Client
    from dotsocr.document import DocumentOptions, Page, PageFailure, open_document
    from dotsocr.errors import (
        AuthenticationError,
        BadRequest,
        ConfigError,
        ContextTooLong,
        CorruptDocument,
        DocumentError,
        DocumentTooLarge,
        DotsOCRError,
        EmptyDocument,
        EngineError,
        EngineTimeout,
        EngineUnavailable,
        ImageRefused,
        ModelNotServed,
        NotADocument,
        OutputError,
        PageSelectionError,
        PageTooExtreme,
        PasswordError,
        UnknownModel,
    )
    from dotsocr.layout import CATEGORIES, Cell, DocumentResult, PageResult, PageStatus
    from dotsocr.models import get_profile


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dotsocr' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
