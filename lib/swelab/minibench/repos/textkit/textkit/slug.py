"""URL slugs from arbitrary titles."""

from __future__ import annotations

import re
import unicodedata

_NON_WORD = re.compile(r"[^\w\s-]")
_SEPARATORS = re.compile(r"[\s_-]+")


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return decomposed.encode("ascii", "ignore").decode("ascii")


def slugify(text: str, separator: str = "-", max_length: int | None = None, ascii_only: bool = True) -> str:
    """Turn ``text`` into a lowercase slug.

    Accents are removed when ``ascii_only`` is true ("Crème" -> "creme"). Punctuation is dropped, and
    runs of whitespace, hyphens and underscores collapse into a single ``separator``; the slug never
    starts or ends with a separator. With ``max_length`` the slug is cut at a word boundary.
    """
    if not separator:
        raise ValueError("separator must be a non-empty string")
    if ascii_only:
        text = _strip_accents(text)
    text = _NON_WORD.sub("", text).lower()
    slug = _SEPARATORS.sub("-", text).strip("-")
    if max_length is not None and len(slug) > max_length:
        # Cut at the last separator that fits, so that no word is chopped in half.
        cut = slug.rfind(separator, 0, max_length + 1)
        slug = slug[:cut] if cut > 0 else slug[:max_length]
    return slug


def slug_path(*parts: str, separator: str = "-") -> str:
    """Slugify each part and join them with "/": ("My Blog", "Hello World") -> "my-blog/hello-world".

    Parts that are empty after slugifying are skipped.
    """
    slugs = [slugify(part) for part in parts]
    return "/".join(slug for slug in slugs if slug)
