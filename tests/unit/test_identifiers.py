"""Identifier hygiene: NFKC, trimming, forbidden characters, the email shape, and where each applies."""

from __future__ import annotations

import sys
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from domain.identifiers import SURROUNDING_WHITESPACE, check_email, clean_identifier, normalise_text
from domain.identity import IdentityRules, normalise_email, normalise_identifier
from domain.segment import call_adapter

rules = IdentityRules()


# Normalisation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("ｕｓｅｒ４２", "user42"),  # full-width letters and digits
        ("  user42\t\n", "user42"),
        ("\u00a0user42\u3000", "user42"),  # no-break and ideographic spaces
        ("Ann Smith", "Ann Smith"),  # a space inside is kept
        ("ﬁle", "file"),  # a ligature
        ("Å", "Å"),  # A + combining ring composes (NFC is part of NFKC)
        ("C-7", "C-7"),
        ("", ""),
    ],
)
def test_values_are_nfkc_normalised_and_trimmed(raw: str, clean: str) -> None:
    assert clean_identifier(raw) == clean
    assert normalise_text(raw) == clean


@pytest.mark.parametrize(
    ("raw", "code", "what"),
    [
        ("x@example.com\u200b", "U+200B (ZERO WIDTH SPACE)", "invisible format character"),
        ("a\u200cb", "U+200C (ZERO WIDTH NON-JOINER)", "invisible format character"),
        ("a\u200db", "U+200D (ZERO WIDTH JOINER)", "invisible format character"),
        ("a\u2060b", "U+2060 (WORD JOINER)", "invisible format character"),
        ("\ufeffuser", "U+FEFF (ZERO WIDTH NO-BREAK SPACE)", "invisible format character"),
        ("user\u202egpj.exe", "U+202E (RIGHT-TO-LEFT OVERRIDE)", "bidirectional"),
        ("a\u202ab", "U+202A (LEFT-TO-RIGHT EMBEDDING)", "bidirectional"),
        ("a\u2066b\u2069", "U+2066 (LEFT-TO-RIGHT ISOLATE)", "bidirectional"),
        ("a\u200fb", "U+200F (RIGHT-TO-LEFT MARK)", "bidirectional"),
        ("a\u00adb", "U+00AD (SOFT HYPHEN)", "invisible format character"),
        ("user\x00", "U+0000 (NULL)", "control character"),
        ("a\tb", "U+0009 (TAB)", "control character"),
        ("a\x1fb", "U+001F", "control character"),
        ("a\x85b", "U+0085", "control character"),
        ("a\u2028b", "U+2028 (LINE SEPARATOR)", "line separator"),
        ("a\u2029b", "U+2029 (PARAGRAPH SEPARATOR)", "paragraph separator"),
        ("a\ue000b", "U+E000", "private-use character"),
        ("a\ud800b", "U+D800", "surrogate"),
        ("a\U000e0041b", "U+E0041 (TAG LATIN CAPITAL LETTER A)", "invisible format character"),
        ("a\U0010fffeb", "U+10FFFE", "unassigned code point"),
    ],
)
def test_forbidden_characters_are_refused_naming_the_character(raw: str, code: str, what: str) -> None:
    with pytest.raises(ValueError) as refused:
        clean_identifier(raw)
    reason = str(refused.value)
    assert f"contains {code}," in reason
    assert what in reason
    assert "remove it" in reason


def test_a_forbidden_character_is_refused_even_where_trimming_would_reach() -> None:
    for raw in ("\x00user", "user\x00", "user\u200b", "\u200buser", "user\u2028"):
        with pytest.raises(ValueError):
            clean_identifier(raw)


def test_the_trimmed_whitespace_is_every_space_separator_and_ascii_whitespace() -> None:
    spaces = {c for c in map(chr, range(sys.maxunicode + 1)) if unicodedata.category(c) == "Zs"}
    assert set(SURROUNDING_WHITESPACE) == spaces | set("\t\n\r\x0b\x0c")


# Emails -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("ann@example.com", "ann@example.com"),
        (" Ann@Example.COM ", "Ann@Example.COM"),  # case is kept; identity lower-cases
        ("ann.smith+news@mail.example.co.uk", "ann.smith+news@mail.example.co.uk"),
        ("ａｎｎ＠ｅｘａｍｐｌｅ．ｃｏｍ", "ann@example.com"),  # full-width, @ included
        ("jörg@bücher.de", "jörg@bücher.de"),
        ("a" * 64 + "@" + "b" * 185 + ".com", "a" * 64 + "@" + "b" * 185 + ".com"),  # 254 characters
    ],
)
def test_plausible_emails_pass(raw: str, clean: str) -> None:
    assert check_email(raw) == clean


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not an email", "no spaces"),
        ("ann example.com", "no spaces"),
        ("annexample.com", "exactly one @"),
        ("ann@x@example.com", "exactly one @"),
        ("@example.com", "a name before the @"),
        ("ann@", "a domain after the @"),
        ("ann@localhost", "has a dot"),
        ("ann@example..com", "empty part"),
        ("ann@.example.com", "empty part"),
        ("ann@example.com.", "empty part"),
        ("a" * 65 + "@example.com", "at most 64"),
        ("a" * 64 + "@" + "b" * 186 + ".com", "at most 254"),
        ("", "cannot be empty"),
        ("x@example.com\u200b", "U+200B"),
    ],
)
def test_implausible_emails_fail_with_the_reason(raw: str, reason: str) -> None:
    with pytest.raises(ValueError) as failed:
        check_email(raw)
    assert reason in str(failed.value)


# Identity: values that fail are not used ----------------------------------------------------


def test_an_email_without_the_shape_of_one_is_no_identifier() -> None:
    call = {"type": "identify", "userId": "u1", "traits": {"email": "not an email"}}
    assert rules.identifiers_of(call) == ["user_id:u1"]
    assert rules.identifiers_of({"anonymousId": "a1", "context": {"traits": {"email": "ann@localhost"}}}) == [
        "anonymous_id:a1"
    ]


def test_trait_identifiers_are_nfkc_normalised() -> None:
    crm = IdentityRules(external_id_types=["crm_id"])
    call = {"anonymousId": "ａ１", "traits": {"email": "Ａｎｎ@Example.com", "phone": "+４９ １５１ ２３４５６７８９", "crm_id": "Ｃ-７"}}
    assert crm.identifiers_of(call) == [
        "crm_id:C-7", "email:ann@example.com", "phone:+4915123456789", "anonymous_id:a1",
    ]  # fmt: skip


@pytest.mark.parametrize("bad", ["x@example.com\u200b", "ann\u202e@example.com", "ann@exa\x00mple.com"])
def test_a_trait_email_with_a_forbidden_character_is_no_identifier(bad: str) -> None:
    assert rules.identifiers_of({"userId": "u1", "traits": {"email": bad}}) == ["user_id:u1"]
    assert rules.identifiers_of({"userId": "u1", "context": {"traits": {"email": bad}}}) == ["user_id:u1"]


def test_trait_phones_and_external_ids_with_forbidden_characters_are_no_identifiers() -> None:
    crm = IdentityRules(external_id_types=["crm_id"])
    call = {
        "userId": "u1",
        "traits": {"phone": "+49 151 23456789\u200b", "crm_id": "C-7\u202e"},
        "context": {"externalIds": [{"type": "crm_id", "id": "C-\x008", "collection": "users"}]},
    }
    assert crm.identifiers_of(call) == ["user_id:u1"]
    assert not crm.usable("C-7\u200b")


def test_blocked_values_are_compared_after_nfkc() -> None:
    assert rules.identifiers_of({"userId": "ｎｕｌｌ", "traits": {"email": "ＴＥＳＴ@test.com"}}) == []


def test_empty_values_are_never_identifiers_whatever_the_blocked_list() -> None:
    assert IdentityRules(blocked_values=[]).identifiers_of({"userId": "  ", "anonymousId": "a1"}) == ["anonymous_id:a1"]


def test_lookups_are_normalised_as_ingest_stores() -> None:
    assert normalise_identifier("user_id:ｕｓｅｒ４２") == "user_id:user42"
    assert normalise_identifier("EMAIL: Ａｎｎ@Example.com ") == "email:ann@example.com"
    assert normalise_identifier("phone:+４９ １５１ ２３４５６７８９") == "phone:+4915123456789"
    assert normalise_identifier("crm_id:\u00a0C-7") == "crm_id:C-7"
    assert normalise_email("Ａｎｎ@Example.com") == "ann@example.com"
    # A value ingest would refuse is normalised but kept: the lookup simply finds nobody.
    assert normalise_identifier("user_id:u1\u200b") == "user_id:u1\u200b"


# Ingest: the top-level ids are refused with the reason --------------------------------------


@pytest.mark.parametrize("field", ["userId", "anonymousId"])
def test_a_forbidden_character_in_a_top_level_id_refuses_the_call(field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        call_adapter.validate_python({"type": "track", "event": "Clicked", field: "u1\u200b"})
    (error,) = refused.value.errors()
    assert error["loc"][-1] == field
    assert "U+200B (ZERO WIDTH SPACE)" in error["msg"]


@pytest.mark.parametrize(
    ("call", "field"),
    [
        ({"type": "group", "userId": "u1", "groupId": "g\u202e1"}, "groupId"),
        ({"type": "alias", "userId": "u1", "previousId": "a\x001"}, "previousId"),
        ({"type": "alias", "userId": "u\u20661", "previousId": "a1"}, "userId"),
    ],
)
def test_group_and_alias_ids_are_refused_too(call: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        call_adapter.validate_python(call)
    (error,) = refused.value.errors()
    assert error["loc"][-1] == field
    assert "the identifier contains U+" in error["msg"]


def test_top_level_ids_are_stored_normalised() -> None:
    call = call_adapter.validate_python(
        {"type": "alias", "userId": " ｕｓｅｒ４２ ", "previousId": "\u00a0anon-1", "anonymousId": 7}
    )
    assert (call.userId, call.previousId, call.anonymousId) == ("user42", "anon-1", "7")
    group = call_adapter.validate_python({"type": "group", "anonymousId": "a1", "groupId": "ｇ１"})
    assert group.groupId == "g1"


def test_a_whitespace_only_top_level_id_is_refused_like_an_empty_one() -> None:
    for value in ("", "   ", "\u3000"):
        with pytest.raises(ValidationError) as refused:
            call_adapter.validate_python({"type": "track", "event": "Clicked", "userId": "u1", "anonymousId": value})
        assert refused.value.errors()[0]["loc"][-1] == "anonymousId"


def test_the_length_limit_applies_to_the_normalised_id() -> None:
    expands = "\ufdfa"  # one character, 18 once NFKC spells it out
    assert len(clean_identifier(expands)) == 18
    with pytest.raises(ValidationError):
        call_adapter.validate_python({"type": "track", "event": "Clicked", "userId": expands * 60})


# Properties ---------------------------------------------------------------------------------


@given(st.text())
def test_cleaning_twice_is_cleaning_once(raw: str) -> None:
    try:
        once = clean_identifier(raw)
    except ValueError:
        return
    assert clean_identifier(once) == once
    assert normalise_text(once) == once
    assert unicodedata.is_normalized("NFKC", once)
    assert once == once.strip(SURROUNDING_WHITESPACE)


@given(st.text())
def test_normalising_twice_is_normalising_once(raw: str) -> None:
    once = normalise_text(raw)
    assert normalise_text(once) == once
    assert normalise_identifier(normalise_identifier(f"email:{raw}")) == normalise_identifier(f"email:{raw}")
    assert normalise_identifier(normalise_identifier(f"user_id:{raw}")) == normalise_identifier(f"user_id:{raw}")


@given(st.text(alphabet=st.characters(categories=["Cc", "Cf", "Co", "Cs", "Zl", "Zp"])).filter(bool), st.text())
def test_a_forbidden_character_anywhere_is_always_refused(forbidden: str, around: str) -> None:
    middle = len(around) // 2
    raw = f"u{around[:middle]}{forbidden}{around[middle:]}u"
    try:
        clean_identifier(raw)
    except ValueError:
        return
    raise AssertionError(f"{raw!r} was accepted")


@given(st.text(alphabet=st.characters(codec="ascii", exclude_categories=["Cc"]), min_size=1))
def test_printable_ascii_is_kept_as_it_is_but_for_surrounding_spaces(raw: str) -> None:
    assert clean_identifier(raw) == raw.strip(" ")
