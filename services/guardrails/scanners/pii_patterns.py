"""The PII scanner's pattern recognizers: compiled regexes, each match checked by a validator.

A regex alone flags every long number; the checksums (Luhn, mod-97, SSN ranges,
the NINO and DNI rules, address structure) are what keep the false positives
down, so a candidate that fails its check is dropped, not scored low. Every
recognizer yields `(type, start, end, score)` over the text it is given.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator

Hit = tuple[str, int, int, float]
Recognizer = Callable[[str], Iterator[Hit]]

_CONTEXT_CHARS = 40  # how far before a match a context word may stand


def _context(text: str, start: int, words: re.Pattern[str]) -> bool:
    return words.search(text, max(0, start - _CONTEXT_CHARS), start) is not None


_DIGIT_RUN = re.compile(r"\d+")


def _near_digits(text: str, before: int, after: int) -> list[tuple[int, int]]:
    """Stretches of `text` around its digits: where a pattern that needs a digit can match.

    Dates and street lines hold a number; scanning only near digits keeps their many-word
    patterns off the rest of the text (most of it, in prose).
    """
    windows: list[tuple[int, int]] = []
    for m in _DIGIT_RUN.finditer(text):
        lo, hi = max(0, m.start() - before), m.end() + after
        if windows and lo <= windows[-1][1]:
            windows[-1] = (windows[-1][0], hi)
        else:
            windows.append((lo, hi))
    return windows


def _digits(value: str) -> str:
    return "".join(c for c in value if c.isdigit())


# --- e-mail, URL, IP -------------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![\w.+-])[\w.+-]+@(?:[^\W_](?:[\w-]*[^\W_])?\.)+[^\W\d_]{2,24}(?![\w-])", re.ASCII
)
_URL = re.compile(r"\b(?:https?|ftp)://[^\s<>\"'()\[\]{}]+|\bwww\.[^\s<>\"'()\[\]{}]+", re.I)
# Bare domains only under these TLDs: the ccTLDs that double as file extensions (.py, .sh,
# .md, .rs, .pl, ...) would turn every file name into a URL.
_TLDS = (
    "com|org|net|edu|gov|mil|int|info|biz|io|co|ai|app|dev|me|tv|us|uk|de|fr|es|it|nl|be|ch|"
    "at|se|no|dk|fi|ie|pt|cz|hu|ro|gr|ru|ua|tr|cn|jp|kr|au|nz|ca|br|mx|ar|za|eu|cy|ee|lv|"
    "lt|si|sk|hr|bg|is|lu|online|site|shop|store|cloud|tech|xyz"
)
_DOMAIN = re.compile(
    rf"(?<![\w@.-])(?:[a-z0-9](?:[a-z0-9-]{{0,61}}[a-z0-9])?\.)+(?:{_TLDS})(?:/[^\s<>\"']*)?"
    r"(?![\w@-])",
    re.I,
)
_URL_TRAIL = ".,;:!?'\")]}>"
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:%\w+)?(?![\w:])")


def emails(text: str) -> Iterator[Hit]:
    for m in _EMAIL.finditer(text):
        yield "EMAIL", m.start(), m.end(), 1.0


def urls(text: str) -> Iterator[Hit]:
    for pattern, score in ((_URL, 0.95), (_DOMAIN, 0.7)):
        for m in pattern.finditer(text):
            end = m.end()
            while end > m.start() and text[end - 1] in _URL_TRAIL:
                end -= 1
            if end - m.start() > 4:
                yield "URL", m.start(), end, score


def ip_addresses(text: str) -> Iterator[Hit]:
    for pattern in (_IPV4, _IPV6):
        for m in pattern.finditer(text):
            value = m.group().split("%")[0]
            if ":" in value and not any(c.isalnum() for c in value):
                continue
            try:
                ipaddress.ip_address(value)
            except ValueError:
                continue
            if "." in value and any(len(p) > 1 and p[0] == "0" for p in value.split(".")):
                continue  # 01.02.03.04 is a date or a version, not an address
            yield "IP_ADDRESS", m.start(), m.end(), 0.95


# --- cards, IBAN, national IDs --------------------------------------------------------------

_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){11,18}(?![\d-]|-\d)")
_CARD_CONTEXT = re.compile(r"(?i)\b(?:card|visa|mastercard|amex|maestro|credit|debit)\b")


def luhn_ok(number: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def credit_cards(text: str) -> Iterator[Hit]:
    for m in _CARD.finditer(text):
        number = _digits(m.group())
        if len(set(number)) < 2 or not luhn_ok(number):
            continue
        if len(number) == 12 and not _context(text, m.start(), _CARD_CONTEXT):
            continue  # 12-digit Maestro numbers only where a card is mentioned
        yield "CREDIT_CARD", m.start(), m.end(), 1.0


# Lengths by country (the SWIFT registry): a wrong length fails before the checksum.
_IBAN_LENGTHS = {
    **dict.fromkeys("NO", 15),
    **dict.fromkeys(("BE",), 16),
    **dict.fromkeys(("DK", "FO", "FI", "GL", "NL"), 18),
    **dict.fromkeys(("MK", "SI"), 19),
    **dict.fromkeys(("AT", "BA", "EE", "KZ", "LT", "LU", "XK"), 20),
    **dict.fromkeys(("CH", "CR", "HR", "LI", "LV"), 21),
    **dict.fromkeys(("BG", "BH", "DE", "GB", "GE", "IE", "ME", "RS", "VA"), 22),
    **dict.fromkeys(("AE", "GI", "IL", "TL"), 23),
    **dict.fromkeys(("AD", "CZ", "ES", "MD", "PK", "RO", "SA", "SE", "SK", "TN", "VG"), 24),
    **dict.fromkeys(("PT", "ST"), 25),
    **dict.fromkeys(("IS", "TR"), 26),
    **dict.fromkeys(("FR", "GR", "IT", "MC", "MR", "SM"), 27),
    **dict.fromkeys(("AL", "AZ", "BY", "CY", "DO", "GT", "HU", "LB", "PL", "SV"), 28),
    **dict.fromkeys(("BR", "EG", "PS", "QA", "UA"), 29),
    **dict.fromkeys(("JO", "KW", "MU"), 30),
    **dict.fromkeys(("MT",), 31),
}
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")


def iban_ok(iban: str) -> bool:
    if _IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def ibans(text: str) -> Iterator[Hit]:
    for m in _IBAN.finditer(text):
        value = m.group()
        # Grouped IBANs run in fours; trim a trailing word the optional spaces swallowed.
        for end in range(len(value), 14, -1):
            candidate = value[:end].replace(" ", "")
            if value[end - 1] != " " and iban_ok(candidate):
                yield "IBAN", m.start(), m.start() + end, 1.0
                break


_SSN = re.compile(r"(?<![\d-])(\d{3})([- ]?)(\d{2})\2(\d{4})(?![\d-])")
_SSN_CONTEXT = re.compile(r"(?i)\b(?:ssn|social security|taxpayer|tin|itin)\b")
_SSN_SAMPLES = frozenset(("078051120", "219099999", "123456789"))  # printed on sample cards
_NINO = re.compile(
    r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"
)
_DNI = re.compile(r"\b([XYZ]?)(\d{7,8})-?([A-Z])\b")
_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"
_SIN = re.compile(r"(?<![\d-])\d{3}[- ]\d{3}[- ]\d{3}(?![\d-])")
_SIN_CONTEXT = re.compile(r"(?i)\b(?:sin|social insurance)\b")


def ssn_ok(area: str, group: str, serial: str) -> bool:
    """The SSA never issues area 000, 666 or 900-999, group 00 or serial 0000."""
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return False
    return area + group + serial not in _SSN_SAMPLES


def national_ids(text: str) -> Iterator[Hit]:
    for m in _SSN.finditer(text):
        if not ssn_ok(m[1], m[3], m[4]):
            continue
        if m[2] or _context(text, m.start(), _SSN_CONTEXT):  # bare 9 digits need "SSN" nearby
            yield "NATIONAL_ID", m.start(), m.end(), 0.9 if m[2] == "-" else 0.75
    for m in _NINO.finditer(text):
        yield "NATIONAL_ID", m.start(), m.end(), 0.9
    for m in _DNI.finditer(text):
        prefix, number, letter = m.groups()
        value = int(str("XYZ".index(prefix)) + number if prefix else number)
        if (prefix and len(number) != 7) or (not prefix and len(number) != 8):
            continue
        if _DNI_LETTERS[value % 23] == letter:
            yield "NATIONAL_ID", m.start(), m.end(), 0.85
    for m in _SIN.finditer(text):
        if luhn_ok(_digits(m.group())) and _context(text, m.start(), _SIN_CONTEXT):
            yield "NATIONAL_ID", m.start(), m.end(), 0.85


# --- phone, date, age ------------------------------------------------------------------------

_PHONE = re.compile(
    r"(?<![\w+./-])(?:(?:\+|\(\+|00)\d{1,3}\)?[ .-]?|1[ .-](?=\())?(?:\(0\)[ .-]?)?"
    r"(?:\(\d{1,5}\)/?[ .-]?)?\d{1,5}(?:[ ./-]?\d{1,5}){0,5}(?:\s?(?:x|ext\.?|#)\s?\d{1,5})?"
    r"(?![\w-]|[.,/]\d)",
    re.I,
)
_PHONE_CONTEXT = re.compile(
    r"(?i)\b(?:phone|call|tel|telephone|mobile|cell|fax|desk|text|sms|whatsapp|contact|"
    r"reach|dial|ring|number)\b"
)
_NANP = re.compile(r"(?:\+?1[ .-]?)?(?:\(\d{3}\) ?|\d{3}[.-])\d{3}[.-]\d{4}")
_PHONE_GROUPS = re.compile(r"\d+")


def phones(text: str) -> Iterator[Hit]:
    """Phone-shaped numbers: an international or area-code form, or three or more groups of
    9-13 digits, stand alone; any other digit run needs a word like "call" before it."""
    for m in _PHONE.finditer(text):
        value = m.group()
        number = re.split(r"(?i)\s?(?:x|ext\.?|#)\s?(?=\d+$)", value)[0]
        n = len(_digits(number))
        if not 7 <= n <= 15:
            continue
        if value[0] in "+(" or number != value or _NANP.fullmatch(number) or "(" in number:
            yield "PHONE", m.start(), m.end(), 0.85
        elif len(_PHONE_GROUPS.findall(number)) >= 3 and 9 <= n <= 13:
            yield "PHONE", m.start(), m.end(), 0.6
        elif _context(text, m.start(), _PHONE_CONTEXT):
            yield "PHONE", m.start(), m.end(), 0.75


_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
    r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?"
)
_WEEKDAY = r"(?:Mon|Tues?|Wed(?:nes)?|Thu(?:rs)?|Fri|Sat(?:ur)?|Sun)(?:day)?\.?"
_DAY = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?"
_YEAR = r"(?:1[6-9]\d\d|20\d\d)"
_TIME = (
    r"(?:[01]?\d|2[0-3])(?::[0-5]\d){1,2}(?:\.\d+)?(?:\s?[ap]\.?m\b\.?)?"
    r"|(?:1[0-2]|0?[1-9])\s?[ap]\.?m\b\.?"
)
_AT_TIME = rf"(?:,?\s(?:at\s)?(?:{_TIME}))?"
_DATES = tuple(
    (re.compile(pattern, re.I), score)
    for pattern, score in (
        (
            rf"\b{_YEAR}([-/.])(?:0?[1-9]|1[0-2])\1(?:[12]\d|3[01]|0?[1-9])"
            rf"(?:(?:T|\s)(?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d+)?)?)?(?![\d./-])",
            0.9,
        ),
        (
            r"(?<![\d./-])(?:[12]\d|3[01]|0?[1-9])([./-])(?:[12]\d|3[01]|0?[1-9])\1(?:\d\d)?\d\d"
            rf"{_AT_TIME}(?![\d./-])",
            0.8,
        ),
        (
            rf"\b(?:{_WEEKDAY},? (?:the )?)?(?:{_DAY}(?: of)? {_MONTH}|{_MONTH} (?:the )?{_DAY}),?"
            rf" {_YEAR}\b{_AT_TIME}",
            0.9,
        ),
        (rf"\b{_WEEKDAY},? (?:the )?(?:{_DAY}(?: of)? {_MONTH}|{_MONTH} {_DAY}\b){_AT_TIME}", 0.8),
        (rf"\b{_DAY}(?: of)? {_MONTH}(?!\w)|\b{_MONTH} {_DAY}\b(?!:){_AT_TIME}", 0.7),
        (rf"\b{_MONTH},? {_YEAR}\b|\bQ[1-4],? {_YEAR}\b|\b(?:1[6-9]|20)\d0'?s\b", 0.7),
        (r"\b(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th) century\b", 0.6),
        (rf"(?<![\d:.])(?:{_TIME})(?![\d:])", 0.6),
    )
)
# A bare year counts only after a word that makes it a point in time ("in 1971").
_YEAR_DATE = re.compile(
    rf"(?i)\b(?:in|during|since|until|till|by|from|before|after|of|year|circa|born)\s+({_YEAR})"
    r"\b(?![.,]\d|\s*(?:%|percent|people|units|items|dollars|euros))"
)


def dates(text: str) -> Iterator[Hit]:
    for lo, hi in _near_digits(text, 40, 40):
        for pattern, score in _DATES:
            for m in pattern.finditer(text, lo, hi):
                yield "DATE", m.start(), m.end(), score
        for m in _YEAR_DATE.finditer(text, lo, hi):
            yield "DATE", m.start(1), m.end(1), 0.6


_AGE_NUMBER = r"(1[01]\d|120|\d{1,2})"
_AGES = re.compile(
    rf"(?i)\b{_AGE_NUMBER}[- ]?(?:years?|yrs?)[- ]?old\b"
    rf"|\b{_AGE_NUMBER}[- ]years?[- ]of[- ]age\b"
    rf"|\b(?:aged?|age:|age of|turned|turn|turning)\s+{_AGE_NUMBER}\b"
    r"(?!\s*(?:%|percent|times|days|minutes|hours|am|pm|o'clock))"
    rf"|\b(?:I|he|she|they|you|we)(?:'m| am| is| was| were| are)\s+{_AGE_NUMBER}\b"
    r"(?=\s*(?:[.,;!?]|$|now|today|this|and|but|when|years))"
    rf"|\bwhen (?:I|he|she|they|you|we) (?:was|were) {_AGE_NUMBER}\b(?![\w%:])"
)


def ages(text: str) -> Iterator[Hit]:
    for m in _AGES.finditer(text):
        group = next(i for i in range(1, 6) if m.group(i) is not None)
        yield "AGE", m.start(group), m.end(group), 0.8


# --- street addresses ------------------------------------------------------------------------
# A street line (a number beside a street word: "221B Baker Street", "Koskikatu 25",
# "Rue de Rivoli 12", "P.O. Box 149") is the anchor; the lines or comma-separated parts after
# it (apartment, city, region, postcode, country) join it only when they look like those.

_NUM = r"\d{1,6}[A-Za-z]?(?:[-/]\d{1,4}[A-Za-z]?)?"
_WORD = r"[^\W\d_][\w'\u2019.-]*"
# Words that never stand inside a street name: they keep "walked 3 blocks down the road" out.
_NOT_STREET = (
    "a|an|the|of|to|in|on|at|by|for|from|with|and|or|but|is|are|was|were|be|my|your|his|her|"
    "our|their|this|that|these|those|it|its|down|up|over|per|than|then|about|into|some|more|"
    "most|many|few|each|every|any|all|no|not|only|just|very|also|minutes|hours|days|weeks|"
    "months|years|times|people|items|pages|steps|miles|km|meters|feet|blocks|during|since|"
    "until|after|before|call|me|us|number|card|page|chapter|version|windows|room|box|apt|"
    "apartment|suite|unit|flat|floor"
)
_STREET_WORD = rf"(?!(?i:{_NOT_STREET})\b){_WORD}"
_EN_SUFFIX = (
    r"street|st|avenue|ave|av|road|rd|lane|ln|drive|dr|boulevard|blvd|court|ct|place|pl|square|"
    r"sq|way|terrace|ter|parkway|pkwy|highway|hwy|circle|cir|trail|trl|close|crescent|cres|row|"
    r"mews|gardens|gdns|grove|hill|hills|park|plaza|alley|pass|path|pike|loop|route|rte|walk|"
    r"heights|hts|ridge|point|crossing|creek|valley|village|estates?|extensions?|squares?|"
    r"union|junction|forges?|courts|meadows?|landing|harbou?r|center|centre|common|green|"
    r"fields?|wharf|quay|expressway|freeway|turnpike|causeway|embankment|broadway|circus|"
    r"stravenue|summit|throughway|tunnel|viaduct|vista|ways|wells?|bypass|cove|curve|dale|"
    r"dam|divide|falls|ferry|flats?|fords?|forest|fort|gateway|glens?|haven|islands?|isle|"
    r"keys?|knolls?|lakes?|light|lodge|manors?|mills?|motorway|mount|mountain|neck|orchard|"
    r"oval|overpass|pines?|plains?|ports?|prairie|radial|ramp|ranch|rapids?|rest|river|"
    r"shoals?|shores?|skyway|springs?|spurs?|station|stream|streets|trace|track|trafficway|"
    r"underpass|views?|villages?|ville"
)
_GLUED_SUFFIX = (
    r"straße|strasse|str\.|gasse|weg|allee|platz|damm|ufer|vej|gade|gatan|gata|vägen|väg|"
    r"gränd|veien|vegen|gaten|katu|tie|kuja|polku|laan|straat|plein|gracht|dreef|kade|utca|"
    r"körút|stræti|straeti|vegur|braut|sokak|caddesi|ulica|ulice|cesta"
)
_SPLIT_SUFFIX = r"strasse|straße|str\.|u\.|utca|út|tér|rkp\.|körút|allee|gasse|vej|gade|weg|platz"
_PREFIX = (
    r"rue|via|viale|calle|avenida|av\.|avenue|rua|piazza|plaza|carrer|corso|strada|boulevard|"
    r"bd\.|chemin|allée|place|quai|impasse|ul\.|ulica|al\.|aleja|plac|λ\.|οδός|camino|travessa|"
    r"largo|praça|paseo|ronda|cesta|ulice|trg"
)
_MILITARY = r"(?:APO|FPO|DPO)\s+(?:AA|AE|AP)\s+\d{5}\b"
# Street lines that are addresses on their own, by their street word or box.
_S = r"[ \t]+"  # inside a street line: a street line never runs over two lines
_STREETS = (
    rf"(?:{_NUM}{_S})?{_NUM}{_S}(?:{_STREET_WORD}{_S}){{1,4}}(?i:{_EN_SUFFIX})\b\.?"
    rf"(?:{_S}(?:N|S|E|W|NE|NW|SE|SW)\b\.?)?",
    rf"(?:{_NUM}{_S})?(?:{_STREET_WORD}{_S}){{0,2}}[^\W\d_][\w'-]{{2,}}?(?i:{_GLUED_SUFFIX})"
    rf"{_S}{_NUM}\b\.?",
    rf"(?:{_NUM}{_S})?(?:{_STREET_WORD}{_S}){{1,3}}(?i:{_SPLIT_SUFFIX}){_S}{_NUM}\b\.?",
    rf"(?:{_NUM},?{_S})?(?i:{_PREFIX}){_S}(?:{_STREET_WORD}{_S}){{0,3}}{_STREET_WORD},?{_S}"
    rf"{_NUM}\b\.?",
    rf"{_NUM},?{_S}(?i:{_PREFIX}){_S}(?:{_STREET_WORD}{_S}){{0,3}}{_STREET_WORD}",
    rf"(?i:P\.?[ \t]*O\.?[ \t]*Box|Post(?:al)?{_S}Office{_S}Box|PSC{_S}\d{{1,5}},?{_S}Box|"
    rf"Unit{_S}\d{{1,5}},?{_S}Box){_S}\d{{1,6}}\b",
    rf"(?i:(?:USNS|USNV|USS|USCGC){_S}{_WORD}(?:{_S}{_WORD})?\s*{_MILITARY})",
)
_STREET = re.compile(r"(?<![\w-])(?:" + "|".join(_STREETS) + ")")
# "Brisas 6802", "Edeby 55": a street only when a unit or a postcode follows or "address" leads.
_BARE_STREET = re.compile(rf"(?<![\w-])(?:{_NUM}[ \t]+)?(?:{_STREET_WORD}[ \t]+){{1,3}}{_NUM}\b\.?")
_ADDRESS_CONTEXT = re.compile(
    r"(?i)\b(?:address|live[sd]? (?:at|in)|living at|located at|moved to|ship(?:ped)? to|"
    r"send (?:it )?to|sent to|deliver(?:ed)? to)\b"
)
_CORNER = re.compile(
    rf"(?i:\bcorner of)\s+((?:{_NUM}\s+)?(?:{_WORD}\s+){{1,4}}(?:{_NUM}\.?\s+)?and\s+"
    rf"(?:{_NUM}\s+)?{_WORD}(?:\s+{_WORD}){{0,3}})"
)
_POSTCODE = (
    r"(?:\d{5}(?:-\d{3,4})?|\d{4}(?: ?[A-Z]{2}(?![\w]))?|\d{3} \d{2}|\d{2}-\d{3}|"
    r"[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}|[A-Z]\d[A-Z] ?\d[A-Z]\d)(?![\w-])"
)
_SEP = re.compile(r"[ \t]*(?:,[ \t>]*\n?|\n)[\s>,]*")
_SPACE = re.compile(r"[ \t]+")
_UNIT = re.compile(
    r"(?i:apt\.?|apartment|suite|ste\.?|unit|flat|floor|fl\.|room|rm\.?|building|bldg\.?|#)"
    r"\s*#?\d{1,6}[A-Za-z]?\b"
)
_ZIP = re.compile(_POSTCODE + "|" + _MILITARY)
# Lower-case words inside place names: "Črni Vrh nad Idrijo", "Frankfurt am Main".
_PLACE_CONNECTORS = frozenset(
    [
        "nad",
        "pod",
        "am",
        "an",
        "der",
        "den",
        "bei",
        "im",
        "in",
        "de",
        "la",
        "le",
        "les",
        "del",
        "della",
        "di",
        "da",
        "do",
        "dos",
        "das",
        "du",
        "sur",
        "en",
        "op",
        "aan",
        "upon",
        "on",
        "y",
        "i",
        "e",
    ]
)
_PLACE_WORDS = re.compile(rf"{_WORD}(?:[ -]{_WORD}){{0,3}}")
_PLACE_TAIL = re.compile(rf"(?: \(\w+\))?(?:\s+({_POSTCODE}))?")
_ENDS_PART = re.compile(r"[ \t]*(?:[\n?!;]|\.(?:\s|$)|$)")
_POSTCODE_CONTEXT = re.compile(
    rf"(?i)\b(?:zip(?: ?code)?|post ?code|postal code|plz)\b\s*[:#]?\s*({_POSTCODE})"
)


def _place(text: str, start: int) -> tuple[int, bool] | None:
    """A city, region or country at `start` (its end, and whether a postcode closed it)."""
    m = _PLACE_WORDS.match(text, start)
    if m is None:
        return None
    words = m.group().replace("-", " ").split(" ")
    for n in range(len(words), 0, -1):
        if not words[0][0].isupper() or not all(
            w[0].isupper() or w in _PLACE_CONNECTORS for w in words[:n]
        ):
            continue
        end = start + len(" ".join(words[:n]))
        tail = _PLACE_TAIL.match(text, end)
        if tail is not None and tail.group(1):
            return tail.end(), True
        end = tail.end() if tail is not None else end
        if _ENDS_PART.match(text, end):
            return end, False
        sep = _SEP.match(text, end)
        if sep is not None and sep.end() < len(text) and text[sep.end()].isupper():
            return end, False
    return None


def _extend(text: str, end: int) -> tuple[int, bool]:
    """How far an address runs on from a street line ending at `end` (unit, city,
    region, postcode), and whether a unit or a postcode was among what followed."""
    after_unit = strong = False
    for _ in range(6):
        sep = _SEP.match(text, end)
        if sep is None:
            space = _SPACE.match(text, end)
            if space is None:
                break
            start, plain = space.end(), True
        else:
            start, plain = sep.end(), False
        m = _UNIT.match(text, start)
        if m is not None:
            end, after_unit, strong = m.end(), True, True
            continue
        if plain and not after_unit:
            break
        m = _ZIP.match(text, start)
        if m is not None:
            end, after_unit, strong = m.end(), False, True
            continue
        place = _place(text, start)
        if place is None:
            break
        end, after_unit, strong = place[0], False, strong or place[1]
    return end, strong


# "583 Magrethevej 298", "3369 24 Clarke Avenue": a building number before a street line that
# has its own number.
_BUILDING = re.compile(rf"({_NUM})[ \t]+(?=\d|.*\d\.?$)")
_BLOCK_START = re.compile(r"(?:^|\n)[ \t>]*$")
_PLACE_ZIP = re.compile(rf"(.*?\S)[ \t]+({_POSTCODE})$")


def _street_parts(text: str, start: int, end: int, score: float) -> Iterator[Hit]:
    m = _BUILDING.match(text, start, end)
    if m is None:
        yield "ADDRESS", start, end, score
    else:
        yield "ADDRESS", start, m.end(1), score
        yield "ADDRESS", m.end(), end, score


def _block_parts(text: str, start: int, end: int, score: float) -> Iterator[Hit]:
    """An address laid out on lines of its own, one hit a line: street, unit, postcode as
    ADDRESS, city and country as ADDRESS_PLACE (the scanner names those LOCATION when the
    rule asks for places). Each line redacted is the whole address redacted."""
    pos = start
    for sep in [*_SEP.finditer(text, start, end), None]:
        part_end = sep.start() if sep is not None else end
        if part_end > pos:
            value = text[pos:part_end]
            if pos == start:
                yield from _street_parts(text, pos, part_end, score)
            elif _UNIT.fullmatch(value) or _ZIP.fullmatch(value):
                yield "ADDRESS", pos, part_end, score
            elif (m := _PLACE_ZIP.fullmatch(value)) is not None:
                yield "ADDRESS_PLACE", pos, pos + m.end(1), score
                yield "ADDRESS", pos + m.start(2), part_end, score
            else:
                yield "ADDRESS_PLACE", pos, part_end, score
        if sep is not None:
            pos = sep.end()


def _address(text: str, start: int, street_end: int, end: int, score: float) -> Iterator[Hit]:
    """A block address by its lines; an inline one whole, or, when it is only a street line,
    its building number apart."""
    if _BLOCK_START.search(text, 0, start) is not None and "\n" in text[start:end]:
        yield from _block_parts(text, start, end, score)
    elif end == street_end:
        yield from _street_parts(text, start, end, score)
    else:
        yield "ADDRESS", start, end, score


def addresses(text: str) -> Iterator[Hit]:
    for lo, hi in _near_digits(text, 100, 100):
        for m in _STREET.finditer(text, lo, hi):
            end, _ = _extend(text, m.end())
            yield from _address(text, m.start(), m.end(), end, 0.85 if end > m.end() else 0.75)
        for m in _BARE_STREET.finditer(text, lo, hi):
            end, strong = _extend(text, m.end())
            if strong or _context(text, m.start(), _ADDRESS_CONTEXT):
                yield from _address(text, m.start(), m.end(), end, 0.75)
        for m in _POSTCODE_CONTEXT.finditer(text, lo, hi):
            yield "ADDRESS", m.start(1), m.end(1), 0.7
    for m in _CORNER.finditer(text):
        yield "ADDRESS", m.start(1), m.end(1), 0.7


PATTERN_RECOGNIZERS: dict[str, Recognizer] = {
    "EMAIL": emails,
    "URL": urls,
    "IP_ADDRESS": ip_addresses,
    "CREDIT_CARD": credit_cards,
    "IBAN": ibans,
    "NATIONAL_ID": national_ids,
    "PHONE": phones,
    "DATE": dates,
    "AGE": ages,
    "ADDRESS": addresses,
}
