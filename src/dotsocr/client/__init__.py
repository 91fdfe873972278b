"""The Python SDK for ``dotsocr gateway``: ``Client``, and its async twin ``AsyncClient``.

Both speak the gateway's REST API with the gateway's own request and response models
(``dotsocr.gateway.models``) and turn its error bodies back into exceptions. Each call
is described once, as a ``_Call`` (what to send, how to read the answer); the two
classes differ only in how they send it.

DotsOCRError
 └── GatewayError             the gateway refused a request, or gave no answer
      ├── Unauthorized         401: missing or wrong API key
      ├── JobNotFound          404: no such job for this key (finished long ago, or deleted)
      ├── RequestRefused       400, 413, 415, 422: the request itself is wrong
      ├── GatewayBusy          503, 504: queue full, not ready, or no answer in time
      ├── GatewayUnavailable   no connection: the gateway is down or the URL is wrong
      └── WaitTimeout          wait() ran out of time; the job goes on
"""

from dotsocr.client.asynchronous import AsyncClient
from dotsocr.client.calls import Document, Files, OnProgress, Task
from dotsocr.client.errors import (
    GatewayBusy,
    GatewayError,
    GatewayUnavailable,
    JobNotFound,
    RequestRefused,
    Unauthorized,
    WaitTimeout,
)
from dotsocr.client.sync import Client

__all__ = [
    "AsyncClient",
    "Client",
    "Document",
    "Files",
    "GatewayBusy",
    "GatewayError",
    "GatewayUnavailable",
    "JobNotFound",
    "OnProgress",
    "RequestRefused",
    "Task",
    "Unauthorized",
    "WaitTimeout",
]
