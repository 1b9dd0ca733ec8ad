"""Identifier hygiene: one written form per identifier, and no invisible characters in it.

An identifier is compared as text, so two values that look the same must be the
same string, or one person becomes two profiles (`x@example.com` and
`x@example.com` followed by a zero-width space) and a profile can be shown under a
name that is not its own (a right-to-left override turns `user_gpj.exe` into
something else on screen). So every identifier value is

1. normalised to Unicode NFKC, which folds compatibility forms into one
   (full-width `ｕｓｅｒ４２` is `user42`, a no-break space is a space, `ﬁ` is `fi`);
2. trimmed of surrounding spaces (every space separator) and ASCII whitespace
   (tab, line feed, carriage return, vertical tab, form feed);
3. refused if it still contains a character that nobody can see or type on
   purpose: a control character (Unicode category Cc, NUL and tab included),
   a format character (Cf: zero-width space, joiners, word joiner, byte order
   mark, soft hyphen, bidirectional marks, embeddings, overrides and isolates),
   a surrogate (Cs), a private-use character (Co), an unassigned code point (Cn,
   as of the Unicode version of this Python's `unicodedata`), or a line or
   paragraph separator (Zl, Zp).

Emails are also checked for a plausible shape (`check_email`); this is not RFC 5322
validation, only enough to tell an address from a name or a sentence.

The module is pure: no I/O, standard library only. Callers decide what a refusal
means (ingest rejects the event, identity does not use the value).
"""

from __future__ import annotations

import re
import unicodedata

# Characters trimmed from both ends: every space separator (category Zs) and ASCII whitespace.
# NFKC already maps most Zs characters to U+0020; U+1680 OGHAM SPACE MARK is the one it keeps.
SURROUNDING_WHITESPACE = (
    " \t\n\r\x0b\x0c"
    "\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000"
)

_FORBIDDEN = {
    "Cc": "a control character",
    "Cf": "an invisible format character (like a zero-width space or joiner, or a bidirectional control)",
    "Cs": "a surrogate, which is not a character",
    "Co": "a private-use character",
    "Cn": "an unassigned code point",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}
_ASCII_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_NAMES = {0x00: "NULL", 0x09: "TAB", 0x0A: "LINE FEED", 0x0D: "CARRIAGE RETURN", 0x7F: "DELETE"}

MAX_EMAIL_LENGTH = 254  # RFC 5321: a forward path holds at most 256 octets including the angle brackets
MAX_EMAIL_LOCAL_LENGTH = 64  # RFC 5321


def normalise_text(value: str) -> str:
    """NFKC, then trimmed: the form an identifier value is stored and looked up in. Never refuses."""
    text = unicodedata.normalize("NFKC", value).strip(SURROUNDING_WHITESPACE)
    # Trimming an NFKC string can leave one that NFKC changes again (a spacing accent folds to
    # a space and a combining mark); repeat until the form is stable, so cleaning is idempotent.
    for _ in range(8):  # one round settles every case known; the bound only rules out a loop
        if unicodedata.is_normalized("NFKC", text):
            break
        text = unicodedata.normalize("NFKC", text).strip(SURROUNDING_WHITESPACE)
    return text


def forbidden_character(text: str) -> str | None:
    """Why `text` may not be an identifier (naming the first forbidden character), or None."""
    if text.isascii():  # the common case: only ASCII controls can be wrong
        found = _ASCII_CONTROL.search(text)
        return _describe(found.group()) if found else None
    for char in text:
        if unicodedata.category(char) in _FORBIDDEN:
            return _describe(char)
    return None


def _describe(char: str) -> str:
    name = unicodedata.name(char, "") or _CONTROL_NAMES.get(ord(char), "")
    named = f"U+{ord(char):04X}" + (f" ({name})" if name else "")
    what = _FORBIDDEN[unicodedata.category(char)]
    return (
        f"the identifier contains {named}, {what}; identifiers may not contain control, invisible, bidirectional, "
        "private-use or unassigned characters: remove it and send the identifier as plain text"
    )


def clean_identifier(value: str) -> str:
    """`value` normalised (NFKC, trimmed); raises ValueError naming the character when one is forbidden.

    Cleaning a clean value returns it unchanged. The result may be empty (a value of
    spaces only): whether that is allowed is the caller's decision.
    """
    text = normalise_text(value)
    problem = forbidden_character(text)
    if problem:
        raise ValueError(problem)
    return text


def check_email(value: str) -> str:
    """`value` cleaned (see `clean_identifier`) if it has the shape of an email address; else ValueError.

    Plausible shape: exactly one `@`, a non-empty local part of at most 64
    characters, a domain with a dot and no empty label (`x@example..com`), no
    whitespace anywhere, and at most 254 characters in all. Case is kept: callers
    lower-case when they compare.
    """
    text = clean_identifier(value)
    if not text:
        raise ValueError("an email address cannot be empty")
    if len(text) > MAX_EMAIL_LENGTH:
        raise ValueError(f"an email address has at most {MAX_EMAIL_LENGTH} characters; this one has {len(text)}")
    if any(char.isspace() for char in text):
        raise ValueError("an email address contains no spaces; remove them")
    ats = text.count("@")
    if ats != 1:
        found = "none" if ats == 0 else str(ats)
        raise ValueError(f"an email address has exactly one @ (name@example.com); this one has {found}")
    local, _, domain = text.partition("@")
    if not local:
        raise ValueError("an email address has a name before the @ (name@example.com)")
    if len(local) > MAX_EMAIL_LOCAL_LENGTH:
        raise ValueError(f"the part of an email address before the @ has at most {MAX_EMAIL_LOCAL_LENGTH} characters")
    if not domain:
        raise ValueError("an email address has a domain after the @ (name@example.com)")
    if "." not in domain:
        raise ValueError(f"the domain of an email address has a dot (example.com); {domain} has none")
    if any(not label for label in domain.split(".")):
        raise ValueError(f"the domain {domain} has an empty part: no dot at its start or end, and no two dots in a row")
    return text

