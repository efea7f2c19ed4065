"""Trains the PII tagger (`guardrails.pii_ner`) and writes its one shipped file.

The training text is generated: our own sentence templates filled with Faker's names,
places and companies in many locales (fixed seed), plus the dev split of the public PII
set (tests/data/guardrails/pii/dev.jsonl.gz, never the test split). The gazetteers are
Faker's locale lists (MIT). Faker is a development dependency: it is needed here, not
at run time.

    PYTHONHASHSEED=0 .venv/bin/python -m guardrails.pii_ner_train  # guardrails/data/pii_ner.npz

(Some Faker providers draw from sets, so the same file needs the same hash seed.)
"""

from __future__ import annotations

import argparse
import gzip
import importlib
import json
import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from guardrails.pii_ner import GAZETTEERS, MODEL, TAGS, Gazetteer, Tagger, tokens

ROOT = Path(__file__).resolve().parents[2]
DEV = ROOT / "tests" / "data" / "guardrails" / "pii" / "dev.jsonl.gz"
LOCALES = (
    "en_US", "en_GB", "en_NZ", "en_IE", "en_AU", "de_DE", "de_AT", "de_CH", "fr_FR", "fr_CH",
    "it_IT", "es_ES", "es_MX", "es_AR", "pt_BR", "pt_PT", "nl_NL", "nl_BE", "sv_SE", "no_NO",
    "da_DK", "fi_FI", "pl_PL", "cs_CZ", "hu_HU", "sl_SI", "is_IS", "et_EE", "hr_HR", "sk_SK",
    "ro_RO", "tr_TR", "lt_LT", "lv_LV",
)  # fmt: skip
_LISTS = {
    "first": ("person", ("first_names", "first_names_male", "first_names_female")),
    "last": ("person", ("last_names", "last_names_male", "last_names_female")),
    "city": ("address", ("cities", "city_names", "towns", "postcode_city")),
    "region": ("address", ("states", "regions", "provinces", "departments", "counties")),
    "country": ("address", ("countries",)),
}
BUCKETS = 1 << 18
Example = tuple[str, list[tuple[str, int, int]]]

# {P} person, {F} first name, {L} place, {C} country, {O} organisation.
TEMPLATES = (
    "My name is {P}.", "Hi, I'm {P} and I live in {L}.", "{P} called yesterday about the invoice.",
    "Please forward this to {P} at {O}.", "I work for {O} in {L}.", "{O} is hiring in {L}.",
    "Dear {P},\nthank you for your order.", "Regards,\n{P}\n{O}", "We flew from {L} to {L}.",
    "{P} and {P} met in {C} last year.", "Can {F} reset my password?", "Ask {F} about it.",
    "She moved to {L}, {C} with {P}.", "The meeting with {O} is moved to Monday.",
    "{P} works at {O} as an engineer.", "Contact {P} ({O}) for details.",
    "Our office in {L} is closed today.", "I was born in {C}.", "{P} from {O} says hi.",
    "They had three kids: {F}, {F} and {F}.", "Is {O} open on Sundays?", "Thanks {F}!",
    "{P} was appointed CEO of {O}.", "He grew up in {L} but now lives in {C}.",
    "Mr. {P} wants a refund.", "Ms {P} asked for the manager.", "Dr. {P} is on call.",
    "Shipping to {L} takes 3 days.", "{O} acquired {O} for $2 billion.", "I love {L}!",
    "According to {O}, sales fell.", "Send it to {P}, {L}.", "Who is {P}?", "{F} here.",
    "The {O} account was suspended.", "Tell {F} that {P} is waiting.", "Weather in {L}?",
    "{P} wrote the report with {F}.", "My manager {P} approved it.", "Visit us in {C}.",
    "I'm travelling to {L} next week for {O}.", "{O} has offices in {C} and {C}.",
    "Signed: {P}", "Name: {P}\nCompany: {O}\nCity: {L}", "{P}\n{O}\n{L}\n{C}",
    "{P}\n\n{S}\n {U}\n {L}\n {C} {Z}", ">{P}\n>{O}\n>{P}\n>{S}\n>{U}\n>{L}\n>{C} {Z}",
    "{P}\n\n{L}\n{C}", "I live at {S}, {L}.", "Send it to {S}\n{L}\n{C}",
    "We moved here from {L}", "{O} is based in {L}", "I am in {L} for work",
)  # fmt: skip
# Random prose around an entity: a name is a name wherever it stands.
PROSE = (
    "{W} {P} {W}.", "{W} {P}.", "{W} {L} {W}.", "{W} {O} {W}.", "{W} {C}.", "{W} {F} {W}.",
    "{W}, {P} {W}.", "{W} ({P}).", "{W} {O}.", "{W} {W}.", "{W} {W}?",
)  # fmt: skip
NEGATIVES = (
    "How do I reset my password?", "The API returns a 500 error on Monday mornings.",
    "Please send the invoice by Friday.", "What is the refund policy for the Pro plan?",
    "I can't log in to the Dashboard after the update.", "Our Team Lead approved the PR.",
    "Is the ATM fee waived for Premium accounts?", "The PDF export is broken in Chrome.",
    "Thanks for your help!", "Where can I find the Terms of Service?", "Hello there.",
    "The Board meets in January.", "Can you explain the difference between IBAN and SWIFT?",
    "My card was declined at the Store.", "Please update the README and the Changelog.",
    "English and French versions are available.", "Click Settings, then Privacy.",
)  # fmt: skip


def gazetteer_lists() -> dict[str, list[str]]:
    lists: dict[str, set[str]] = {name: set() for name in GAZETTEERS}
    for name, (provider, attrs) in _LISTS.items():
        for locale in LOCALES:
            try:
                module = importlib.import_module(f"faker.providers.{provider}.{locale}")
            except ImportError:
                continue
            for attr in attrs:
                values = getattr(module.Provider, attr, None)
                if isinstance(values, dict | list | tuple):
                    lists[name].update(v for v in values if isinstance(v, str) and v.strip())
    return {name: sorted(values) for name, values in lists.items()}


def _fillers(seed: int) -> dict[str, Callable[[], str]]:
    from faker import Faker

    fakers = [Faker(locale) for locale in LOCALES]
    for i, fake in enumerate(fakers):
        fake.seed_instance(seed + i)
    rng = random.Random(seed)

    def pick() -> Faker:
        return fakers[0] if rng.random() < 0.3 else rng.choice(fakers)

    def person() -> str:
        fake = pick()
        kind = rng.random()
        if kind < 0.15:
            return f"{fake.first_name()} {fake.first_name()[0]}. {fake.last_name()}"
        return fake.last_name() if kind < 0.25 else f"{fake.first_name()} {fake.last_name()}"

    def brand() -> str:
        """A company named the other common way: words and an industry ("Acme Data Labs")."""
        words = [w.title() for w in rng.choices(_WORDS, k=rng.randint(0, 2))]
        if rng.random() < 0.5:
            words.insert(0, pick().last_name())
        return " ".join([*words, rng.choice(_INDUSTRY)]) if words else pick().company()

    def street() -> str:
        fake = pick()
        return f"{fake.building_number()} {fake.street_address()}"

    return {
        "S": street,
        "U": lambda: rng.choice(("Apt.", "Suite")) + f" {rng.randint(1, 999):03d}",
        "Z": lambda: f"{rng.randint(0, 99999):05d}",
        "W": lambda: " ".join(rng.choices(_WORDS, k=rng.randint(1, 6))),
        "P": person,
        "F": lambda: pick().first_name(),
        "L": lambda: pick().city() if rng.random() < 0.75 else pick().country(),
        "C": lambda: pick().country(),
        "O": lambda: pick().company() if rng.random() < 0.5 else brand(),
    }


_SLOT = re.compile(r"\{([PFLCOSUZW])\}")
_KIND = {"P": "PERSON", "F": "PERSON", "L": "LOCATION", "C": "LOCATION", "O": "ORGANIZATION"}
_INDUSTRY = (
    "Technologies", "Systems", "Services", "Solutions", "Analytics", "Data", "Labs", "Group",
    "Partners", "Markets", "Health", "Media", "Software", "Networks", "Capital", "Insurance",
    "Transit", "Energy", "Logistics", "Consulting", "Holdings", "Bank", "Foods", "Motors",
    "Pharmaceuticals", "Research", "Institute", "Foundation", "Associates", "Digital", "Corp",
)  # fmt: skip
_WORDS: tuple[str, ...] = tuple(
    importlib.import_module("faker.providers.lorem.en_US").Provider.word_list
)


def generated(count: int, seed: int) -> Iterator[Example]:
    fill = _fillers(seed)
    rng = random.Random(seed)
    for _ in range(count):
        if rng.random() < 0.08:
            yield rng.choice(NEGATIVES), []
            continue
        template = rng.choice(TEMPLATES if rng.random() < 0.6 else PROSE)
        case = rng.random()
        text, spans, pos = "", [], 0
        for m in _SLOT.finditer(template):
            value = fill[m[1]]()
            value = value.upper() if case < 0.06 else value
            text += template[pos : m.start()]
            if m[1] in _KIND:
                spans.append((_KIND[m[1]], len(text), len(text) + len(value)))
            text += value
            pos = m.end()
        text += template[pos:]
        if rng.random() < 0.3:  # chat messages often end without a stop
            text = text.rstrip(".?!")
        yield text[:1].upper() + text[1:], spans


def dev_rows() -> Iterator[Example]:
    with gzip.open(DEV, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            kinds = {t for t in TAGS[1:]}
            spans = [(t, s, e) for t, s, e in row["spans"] if f"B-{t}" in kinds]
            yield row["text"], spans


def tag_ids(
    text: str, spans: list[tuple[str, int, int]]
) -> tuple[list[tuple[int, int]], list[int]]:
    toks = tokens(text)
    tags = [0] * len(toks)
    for kind, start, end in spans:
        inside = [i for i, (s, e) in enumerate(toks) if s >= start and e <= end]
        for j, i in enumerate(inside):
            tags[i] = TAGS.index(("B-" if j == 0 else "I-") + kind)
    return toks, tags


def train(examples: list[Example], lists: dict[str, list[str]], epochs: int, seed: int) -> Tagger:
    """An averaged structured perceptron: each mistake moves the gold path up, the guess down."""
    n_tags = len(TAGS)
    weights = np.zeros((BUCKETS, n_tags), np.float32)
    transitions = np.zeros((n_tags, n_tags), np.float32)
    tagger = Tagger(weights, transitions, Gazetteer.build(lists))
    w_sum, t_sum = np.zeros_like(weights), np.zeros_like(transitions)
    prepared = [
        (tagger.features(text, toks), np.array(tags))
        for text, spans in examples
        for toks, tags in [tag_ids(text, spans)]
        if toks
    ]
    rng = random.Random(seed)
    step = 1
    for _ in range(epochs):
        rng.shuffle(prepared)
        for ids, gold in prepared:
            guess = np.array(tagger.decode(tagger.scores(ids)))
            if not (wrong := guess != gold).any():
                step += 1
                continue
            for tags, sign in ((gold, 1.0), (guess, -1.0)):
                rows, cols = ids[wrong], np.repeat(tags[wrong], ids.shape[1])
                np.add.at(weights, (rows.ravel(), cols), sign)
                np.add.at(w_sum, (rows.ravel(), cols), sign * step)
                np.add.at(transitions, (tags[:-1], tags[1:]), sign)
                np.add.at(t_sum, (tags[:-1], tags[1:]), sign * step)
            step += 1
    tagger.weights = (weights - w_sum / step).astype(np.float32)
    tagger.transitions = (transitions - t_sum / step).astype(np.float32)
    return tagger


def save(tagger: Tagger, lists: dict[str, list[str]], path: Path) -> None:
    arrays: dict[str, npt.NDArray[Any]] = {
        f"gaz_{n}": np.frombuffer("\n".join(v).encode(), np.uint8) for n, v in lists.items()
    }
    arrays["weights"] = tagger.weights.astype(np.float16)
    arrays["transitions"] = tagger.transitions.astype(np.float16)
    np.savez_compressed(path, allow_pickle=False, **arrays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=80000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=MODEL)
    args = parser.parse_args()
    lists = gazetteer_lists()
    examples = list(generated(args.sentences, args.seed)) + list(dev_rows()) * 3
    tagger = train(examples, lists, args.epochs, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save(tagger, lists, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
