"""Access control: named, scoped, hashed tokens (LEITSTAND_TOKEN and LEITSTAND_TOKENS_FILE)."""

from .guard import Access
from .tokenfile import TokenFileError, load_token_file, parse_token_file
from .tokens import DomainPatterns, Token, TokenSet

__all__ = ["Access", "DomainPatterns", "Token", "TokenFileError", "TokenSet",
           "load_token_file", "parse_token_file"]
