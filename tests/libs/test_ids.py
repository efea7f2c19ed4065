"""The one grammar of tenant ids, doc ids and collection names, and where unknown tenants go."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from click.testing import CliRunner

from llmops import apikeys
from llmops.cli.main import cli
from llmops.ids import (
    DOC_ID_MAX_CHARS,
    TENANT_RE,
    UNKNOWN_TENANT,
    check_collection,
    check_doc_id,
    check_tenant,
    refusals,
)

Check = Callable[[str], str]


@pytest.mark.parametrize("check", [check_tenant, check_collection])
@pytest.mark.parametrize("value", ["default", "acme", "a", "t-1_b", "0" * 63])
def test_tenant_and_collection_names_that_pass(check: Check, value: str) -> None:
    assert check(value) == value


@pytest.mark.parametrize(
    ("check", "field"), [(check_tenant, "tenant"), (check_collection, "collection")]
)
@pytest.mark.parametrize(
    "value",
    [
        "",
        "../../etc",
        "a/b",
        "a.b",
        "Acme",
        "-a",
        "_a",
        "a b",
        "a\nb",
        "x" * 64,
        "é",
        UNKNOWN_TENANT,
    ],
)
def test_tenant_and_collection_names_that_are_refused(check: Check, field: str, value: str) -> None:
    with pytest.raises(ValueError) as refused:
        check(value)
    message = str(refused.value)
    assert message.startswith(f"invalid {field} {value!r}: ")
    assert "1-63 of a-z 0-9 _ -" in message


@pytest.mark.parametrize(
    "doc_id",
    [
        "docs/a.md",
        "/home/me/notes/2024.01.txt",  # the CLI's absolute ids
        "https://example.com/a?b=1#c",
        "Q3 report (final).pdf",
        "bücher/überblick.md",
        "a..b/...",  # dots that are not a '..' segment
        "x" * DOC_ID_MAX_CHARS,
    ],
)
def test_doc_ids_that_pass(doc_id: str) -> None:
    assert check_doc_id(doc_id) == doc_id


@pytest.mark.parametrize(
    ("doc_id", "why"),
    [
        ("", "it is empty"),
        ("x" * (DOC_ID_MAX_CHARS + 1), f"it is {DOC_ID_MAX_CHARS + 1} characters long"),
        ("a\x07b.md", "control or format character"),
        ("a\nb", "control or format character"),
        ("a\x7fb", "control or format character"),
        ("a\u200bb", "control or format character"),  # zero-width space
        ("a\u202eb", "control or format character"),  # right-to-left override
        (" a.md", "starts or ends with whitespace"),
        ("a.md ", "starts or ends with whitespace"),
        ("../../etc/passwd", "'..' segment"),
        ("docs/../secret", "'..' segment"),
        ("docs/..", "'..' segment"),
        ("docs\\..\\secret", "'..' segment"),
    ],
)
def test_doc_ids_that_are_refused_say_why(doc_id: str, why: str) -> None:
    with pytest.raises(ValueError) as refused:
        check_doc_id(doc_id)
    message = str(refused.value)
    assert message.startswith("invalid doc_id ")
    assert why in message
    assert "printable characters" in message  # the whole rule follows


def test_a_refused_value_is_shown_escaped_and_truncated() -> None:
    with pytest.raises(ValueError) as refused:
        check_doc_id("\r\n" + "y" * 5000)
    message = str(refused.value)
    assert "\n" not in message and "\r" not in message  # one line: it travels in headers
    assert "'\\r\\n" in message and "yyy...'" in message
    assert len(message) < 400


def test_the_unknown_tenant_is_outside_the_grammar_and_keys_use_it() -> None:
    with pytest.raises(ValueError):
        check_tenant(UNKNOWN_TENANT)
    assert (apikeys.TENANT_RE, apikeys.check_tenant) == (TENANT_RE, check_tenant)


@pytest.mark.parametrize(
    "args",
    [
        ["guardrails", "show", "--tenant", "../../etc"],
        ["guardrails", "list", "--tenant", "../../etc"],
        ["prompts", "list", "--tenant", "../../etc"],
        ["keys", "create", "--tenant", "../../etc"],
        ["tenants", "set", "../../etc", "--rpm", "5"],
    ],
)
def test_the_cli_refuses_a_bad_tenant_before_connecting(args: list[str]) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2  # click's usage error: nothing was attempted
    assert "invalid tenant '../../etc': 1-63 of a-z 0-9 _ -" in result.output


def test_refusals_name_every_field_that_breaks_the_rule() -> None:
    assert refusals(tenant="acme", doc_id="docs/a.md", collection="default") == {}
    refused = refusals(tenant="../../etc", doc_id="a\tb", collection="handbook")
    assert set(refused) == {"tenant", "doc_id"}
    assert refused["tenant"].startswith("invalid tenant '../../etc'")
    assert refused["doc_id"].startswith("invalid doc_id 'a\\tb'")
