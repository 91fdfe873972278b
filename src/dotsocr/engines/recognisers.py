"""Which of the embedded CPU engine's recognisers reads a page: Tesseract or PP-OCRv6.

``osd`` (in ``engines.tesseract``) says once per page which way up it is and in which
script, and ``choose`` picks the recogniser: PP-OCRv6 (``engines.ppocr``) reads Chinese
and Japanese, which Tesseract's English data cannot; Tesseract (``engines.tesseract``)
reads everything else, faster.
"""

from __future__ import annotations

from dotsocr.engines.tesseract import tesseract_languages

# Scripts PP-OCRv6 reads and Tesseract's bundled data does not. Hangul is not among them:
# the bundled PP-OCRv6 dictionary has no Hangul syllable, so Korean stays with Tesseract
# (which reads it given Debian's tesseract-ocr-kor).
PADDLE_SCRIPTS = frozenset({"Han", "HanS", "HanT", "Japanese", "Hiragana", "Katakana"})
PADDLE_LANGUAGES = frozenset(
    {"chi_sim", "chi_tra", "chi_sim_vert", "chi_tra_vert", "zh", "ch", "jpn", "jpn_vert", "ja"}
)


def tesseract_codes(languages: str) -> str:
    """The part of ``languages`` Tesseract reads: all but PP-OCR's (``eng`` when none is
    left, for the Latin pages of a Chinese document)."""
    codes = [c for c in languages.split("+") if c.strip().lower() not in PADDLE_LANGUAGES]
    return "+".join(codes) or "eng"


def choose(script: str | None, languages: str) -> str:
    """Which recogniser reads a page: ``"paddle"`` or ``"tesseract"``.

    PP-OCRv6 for Chinese and Japanese, by the page's script from ``osd`` (Han, Japanese,
    Hiragana, Katakana) or, when the user asked for them, by language (chi_sim, chi_tra,
    zh, ch, jpn, ja) whatever OSD said; Tesseract for everything else (Latin, Cyrillic,
    Greek, Hangul, an unknown script), which it reads faster with its own data.
    """
    if script in PADDLE_SCRIPTS:
        return "paddle"
    asked = {code.strip().lower() for code in languages.replace(",", "+").split("+")}
    return "paddle" if asked & PADDLE_LANGUAGES else "tesseract"


def recogniser_languages() -> dict[str, str]:
    """What each recogniser reads, in words, by the name ``choose`` gives it."""
    codes = sorted(code for code in tesseract_languages() if code != "osd")
    installed = ", ".join(codes) if codes else "nothing (no traineddata found)"
    return {
        "tesseract": f"Tesseract, with the traineddata installed: {installed}",
        "paddle": (
            "PP-OCRv6 small (bundled in rapidocr): Chinese (simplified and traditional), "
            "Japanese (kanji and kana), English and digits, Latin-script European "
            "languages with their accented letters (French, German, Spanish, Italian, "
            "Portuguese, Dutch, Polish, Czech, Turkish, Vietnamese and others), Greek "
            "letters and common symbols; no Korean, Cyrillic, Arabic or Indic scripts"
        ),
    }
