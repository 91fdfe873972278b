"""The exception tree every layer raises; the CLI and the gateway translate it.

DotsOCRError
 ├── DocumentError            an input cannot become page images
 │    ├── EmptyDocument        zero-byte file
 │    ├── NotADocument         HTML, text or another type we do not read
 │    ├── CorruptDocument      truncated or damaged beyond repair
 │    ├── PasswordError        encrypted: password missing or wrong
 │    ├── DocumentTooLarge     decompression bomb or absurd page size
 │    └── PageSelectionError   a --pages value that does not fit the document
 ├── PageTooExtreme           a page the model cannot take (aspect ratio)
 ├── EngineError              the OCR engine gave no answer
 │    ├── EngineUnavailable    unreachable, overloaded or failing through every retry
 │    │    └── ServerSilent     no answer at all (nothing listening, connections lost)
 │    ├── EngineTimeout        no answer within the request timeout
 │    ├── AuthenticationError  the server refused the API key
 │    ├── ModelNotServed       the server does not serve the model asked for
 │    ├── ContextTooLong       a page cannot fit the server's context window
 │    ├── ImageRefused         the server could not read the page image
 │    └── BadRequest           any other request the server refused
 ├── OutputError              a result cannot be written
 ├── ServeError               the model server cannot be planned, started or kept running
 │    └── NoGPU                no NVIDIA GPU (or driver) found
 ├── ConfigError              a bad setting or flag value
 └── UnknownModel             no profile of that name (also a KeyError)
"""

from __future__ import annotations


class DotsOCRError(Exception):
    """Base of every error a user can meet; the message says what to do."""


class DocumentError(DotsOCRError):
    """An input cannot be turned into page images."""

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        self.reason = message
        super().__init__(f"{source}: {message}")

    def __reduce__(self) -> tuple:  # pickled whole, from the processes that render pages
        return type(self), (self.source, self.reason)


class EmptyDocument(DocumentError):
    """The file has zero bytes."""


class NotADocument(DocumentError):
    """The bytes are not a PDF or an image we read (HTML error pages, text, archives)."""


class CorruptDocument(DocumentError):
    """The file is truncated or damaged and could not be repaired."""


class PasswordError(DocumentError):
    """The PDF is encrypted and the password is missing or wrong."""


class DocumentTooLarge(DocumentError):
    """A page is too large to render safely: decompression bomb or absurd page size."""


class PageSelectionError(DocumentError):
    """A page selection such as ``1-3,7`` is malformed or outside the document."""


class PageTooExtreme(DotsOCRError):
    """A page's shape is beyond what the model accepts (aspect ratio above its limit)."""


class EngineError(DotsOCRError):
    """An OCR engine failed to answer."""


class EngineUnavailable(EngineError):
    """The server cannot be reached, or kept failing or refusing work through every retry."""


class ServerSilent(EngineUnavailable):
    """The server gave no answer at all: nothing listening, or the connection lost."""


class EngineTimeout(EngineError):
    """The server gave no answer within the request timeout."""


class AuthenticationError(EngineError):
    """The server refused the API key (HTTP 401 or 403)."""


class ModelNotServed(EngineError):
    """The server does not serve the model name asked for (HTTP 404, or not in /v1/models)."""


class ContextTooLong(EngineError):
    """A page's image and answer budget cannot fit the server's context window."""


class ImageRefused(EngineError):
    """The server could not decode or process the page image."""


class BadRequest(EngineError):
    """The server refused the request for another reason (HTTP 4xx)."""


class OutputError(DotsOCRError):
    """A result file cannot be written (folder missing, no permission, disk full)."""


class ServeError(DotsOCRError):
    """The model server cannot be planned, started or kept running."""


class NoGPU(ServeError):
    """No NVIDIA GPU was found: no driver, no NVML, no nvidia-smi, or zero devices."""


class ConfigError(DotsOCRError):
    """A setting or flag has a value we cannot use."""


class UnknownModel(DotsOCRError, KeyError):
    """No model profile is registered under the requested name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
