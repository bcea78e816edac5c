"""textkit: small text utilities."""

from textkit.compare import equals_ignore_case, unique_words
from textkit.slug import slug_path, slugify
from textkit.wrap import truncate, wrap

__all__ = ["equals_ignore_case", "slug_path", "slugify", "truncate", "unique_words", "wrap"]
__version__ = "0.1.0"
