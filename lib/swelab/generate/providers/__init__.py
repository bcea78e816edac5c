"""Model providers behind one OpenAI-compatible client (see providers/client.py)."""

from swelab.generate.providers.client import ChatClient, ChatResult, parse_usage
from swelab.generate.providers.errors import ERROR_KINDS, RETRYABLE_KINDS, SKIP_KINDS, ProviderError, redact
from swelab.generate.providers.profiles import PROFILES, Profile, resolve_endpoint
from swelab.generate.providers.program import open_program, program_id_for, release_program

__all__ = [
    "ERROR_KINDS",
    "PROFILES",
    "RETRYABLE_KINDS",
    "SKIP_KINDS",
    "ChatClient",
    "ChatResult",
    "Profile",
    "ProviderError",
    "open_program",
    "parse_usage",
    "program_id_for",
    "redact",
    "release_program",
    "resolve_endpoint",
]
