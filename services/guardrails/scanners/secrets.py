"""Secrets: API keys, tokens, private keys and passwords, found by detect-secrets' plugins.

detect-secrets works per line and reports secret values; each value is found again in its
line to give offsets of the value itself (a whole PEM block for a private key, a JWT with
its signature). Its plugins are many regexes per line, so a cheap prefilter picks the lines
that could hold a secret at all (a long token, a keyword, a URL with credentials, a PEM
header): ordinary prose never reaches them. Its quoted high-entropy plugins are left out
(a commit hash or a UUID is not a secret); a value counts as a password only next to a
keyword (`password=`, `api_key: "..."`) and only if it looks like one.

Added to its plugins: OpenAI-style keys without the legacy marker (`sk-...`, `sk-proj-...`),
this platform's own keys (`llmops-<id>-<secret>`), bearer tokens, and "my password is ...".
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.base import RegexBasedDetector
from detect_secrets.plugins.basic_auth import BasicAuthDetector
from detect_secrets.plugins.discord import DiscordBotTokenDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.keyword import (
    CONFIG_DENYLIST_REGEX_TO_GROUP,
    QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP,
    KeywordDetector,
)
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.npm import NpmDetector
from detect_secrets.plugins.openai import OpenAIDetector
from detect_secrets.plugins.private_key import PrivateKeyDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.square_oauth import SquareOAuthDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.telegram_token import TelegramBotTokenDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector

from guardrails.scanners.base import Found, Scan, ScanInput
from llmops.guardrails.policy import SecretsRule

_DETECTORS: tuple[tuple[str, RegexBasedDetector], ...] = (
    ("AWS_KEY", AWSKeyDetector()),
    ("AZURE_STORAGE_KEY", AzureStorageKeyDetector()),
    ("BASIC_AUTH", BasicAuthDetector()),
    ("DISCORD_TOKEN", DiscordBotTokenDetector()),
    ("GITHUB_TOKEN", GitHubTokenDetector()),
    ("GITLAB_TOKEN", GitLabTokenDetector()),
    ("JWT", JwtTokenDetector()),
    ("MAILCHIMP_KEY", MailchimpDetector()),
    ("NPM_TOKEN", NpmDetector()),
    ("OPENAI_KEY", OpenAIDetector()),
    ("PRIVATE_KEY", PrivateKeyDetector()),
    ("PYPI_TOKEN", PypiTokenDetector()),
    ("SENDGRID_KEY", SendGridDetector()),
    ("SLACK_TOKEN", SlackDetector()),
    ("SQUARE_TOKEN", SquareOAuthDetector()),
    ("STRIPE_KEY", StripeDetector()),
    ("TELEGRAM_TOKEN", TelegramBotTokenDetector()),
    ("TWILIO_KEY", TwilioKeyDetector()),
)
_KEYWORD = KeywordDetector()
_KEYWORD_STYLES = (QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP, CONFIG_DENYLIST_REGEX_TO_GROUP)

# Ours: (type, lower-case clues of which the text must hold one, pattern whose group 1 is
# the secret).
_PATTERNS = (
    ("LLMOPS_KEY", ("llmops-",), re.compile(r"\b(llmops-[0-9a-f]{12}-[A-Za-z0-9_-]{43})(?![\w-])")),
    ("OPENAI_KEY", ("sk-",), re.compile(r"(?<![\w-])(sk-(?:[a-z]+-)?[A-Za-z0-9_-]{20,})")),
    ("BEARER_TOKEN", ("bearer",), re.compile(r"(?i)\bbearer\s+([A-Za-z0-9._~+/-]{20,}=*)")),
    (
        "PASSWORD",
        ("pass", "pwd"),
        re.compile(r"(?i)\b(?:password|passwd|passcode|pwd)\s+(?:is|was|:)\s+[\"'`]?([^\s\"'`]+)"),
    ),
)
# A line is worth detect-secrets' time only if it has a long token or one of these words
# (plain `in` tests on the lower-cased line: a case-insensitive regex costs 6x more).
_LONG_TOKEN = re.compile(r"[A-Za-z0-9_+/=.-]{16,}")
_CLUES = ("key", "pass", "pwd", "secret", "token", "contrase", "bearer", "putty", "://")
_PEM = re.compile(
    r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----.*?"
    r"(?:-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
    re.DOTALL,
)
# The plugins' matches stop short of the token's end: a JWT's signature, a GitHub token
# after its prefix (their pattern's only group).
_TAILS = {"JWT": re.compile(r"[A-Za-z0-9_.+/=-]*"), "GITHUB_TOKEN": re.compile(r"\w*")}
_TRAILING = ".,;:!?)]}>\"'`"
_PLACEHOLDER = re.compile(r"(?i)^(?:x+|\*+|\.+|<[^>]*>|\$\{?\w+\}?|%\w+%|\{\{.*\}\}|none|null)$")
# Keyword values must look like a secret, not a word: "password: hunter2", not "password: required".
_SECRET_LIKE = re.compile(r"(?=.*[A-Za-z])(?=.*[^A-Za-z]).{6,}|.{16,}")


class SecretsScanner:
    """Finds secrets; score 1.0 when any is found (every detector here is precise)."""

    name = "secrets"

    def __init__(self, rule: SecretsRule) -> None:
        self.rule = rule

    def scan(self, item: ScanInput) -> Scan:
        spans = _merge(list(_find(item.text)))
        if not spans:
            return Scan(0.0)
        kinds = sorted({f.type.lower().replace("_", " ") for f in spans})
        return Scan(1.0, spans, "secrets found: " + ", ".join(kinds))


def _find(text: str) -> Iterator[Found]:
    lower = text.lower()
    for kind, clues, pattern in _PATTERNS:
        if any(clue in lower for clue in clues):
            for match in pattern.finditer(text):
                secret = match.group(1).rstrip(_TRAILING)
                if kind != "PASSWORD" or _looks_secret(secret):
                    yield Found(kind, match.start(1), match.start(1) + len(secret))
    line_start = 0
    for line in text.splitlines(keepends=True):
        lower = line.lower()
        if any(clue in lower for clue in _CLUES) or _LONG_TOKEN.search(line):
            yield from _in_line(text, line, line_start)
        line_start += len(line)


def _in_line(text: str, line: str, line_start: int) -> Iterator[Found]:
    for kind, detector in _DETECTORS:
        for value in set(detector.analyze_string(line)):
            for start in _occurrences(line, value):
                yield _widen(text, kind, line_start + start, line_start + start + len(value))
    for style in _KEYWORD_STYLES:
        for value in set(_KEYWORD.analyze_string(line, denylist_regex_to_group=style)):
            secret = value.split()[0].rstrip(_TRAILING) if value.split() else ""
            if not _looks_secret(secret):
                continue
            for start in _occurrences(line, secret):
                yield Found(
                    "SECRET_ASSIGNMENT", line_start + start, line_start + start + len(secret)
                )


def _looks_secret(value: str) -> bool:
    return not _PLACEHOLDER.match(value) and _SECRET_LIKE.fullmatch(value) is not None


def _occurrences(line: str, value: str) -> Iterator[int]:
    start = line.find(value) if value else -1
    while start >= 0:
        yield start
        start = line.find(value, start + len(value))


def _widen(text: str, kind: str, start: int, end: int) -> Found:
    """A whole PEM block for a private key header, whole tokens where plugins stop early."""
    if kind == "PRIVATE_KEY":
        line_start = text.rfind("\n", 0, start) + 1
        pem = _PEM.search(text, line_start)
        if pem and pem.start() <= start:
            return Found(kind, pem.start(), pem.end())
    if kind in _TAILS:
        tail = _TAILS[kind].match(text, end)
        assert tail is not None
        end = tail.end()
    return Found(kind, start, end)


def _merge(spans: list[Found]) -> list[Found]:
    """Overlapping finds become one span (the longest's type)."""
    merged: list[Found] = []
    for span in sorted(spans, key=lambda f: (f.start, -f.end)):
        if merged and span.start < merged[-1].end:
            last = merged[-1]
            if span.end > last.end:
                longer = span if span.end - span.start > last.end - last.start else last
                merged[-1] = Found(longer.type, last.start, span.end)
            continue
        merged.append(span)
    return merged
