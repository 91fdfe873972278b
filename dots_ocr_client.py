"""The original client script's name and interface, kept for its users: see dotsocr.classic.

python dots_ocr_client.py --health | --models | --image FILE | --text "..."
from dots_ocr_client import DotsOCRClient
"""

from dotsocr.classic import DotsOCRClient, main

__all__ = ["DotsOCRClient", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
