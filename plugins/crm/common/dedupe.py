"""Duplicate detection for people: which records (contacts, leads, rows of a file) are the same person.

Records are plain dicts: an ``id`` and any of the fields in `FIELDS`. ``email`` and ``phone`` may be a
string or a list of strings (a contact has several). ``name`` is a full name, used when ``first_name``
and ``last_name`` are both empty (leads carry only a full name).

How it works
------------
1. **Prepare**: every value is normalized once (Unicode width and case, punctuation; Chinese names to
   pinyin so 张伟 and Zhang Wei compare equal; phones to E.164; dates of birth to YYYYMMDD).
2. **Block**: each record gets a handful of keys: e-mail, phone, a phonetic code of one name with the
   first letters of the other (both ways round, so swapped names still meet), a name's start with the
   postcode,
   house number with postcode, date of birth (and with day and month swapped), name with company; and a
   sorted neighbourhood over the names. Only records sharing a key are compared, so the work grows with
   the number of records, not its square. A key shared by very many records (a placeholder birthday, a
   switchboard number) is not expanded to all its pairs: its members are sorted by name and each one is
   compared with its next neighbours only.
3. **Score**: each field present on both records gives Fellegi–Sunter evidence, log2(m/u) bits when the
   values agree and log2((1-m)/(1-u)) when they do not, interpolated for values that are close
   (Jaro–Winkler, Levenshtein, dates with transposed digits or day and month swapped). `m` is how often
   the field agrees for the same person despite typos, `u` how often two different people agree by
   chance. A field missing on either side adds nothing. Names are compared straight and crossed (given
   and family name swapped), whichever fits better.
4. **Decide**: the evidence W is weighed against the prior odds that two records picked at random are
   the same person. When one record in ten is a duplicate, a file of N records holds about N/10
   duplicate pairs among N²/2 pairs: odds of 1 in 5N, or P = log2(5N) bits (N counted as at least
   1,000, so that a small file is not judged leniently). The score is the posterior probability
   1 / (1 + 2^(P - W)); the default threshold 0.5 reports a pair when being the same person is more
   likely than not. A bigger file holds more chance look-alikes, and asks for more evidence.
5. **Common values** weigh less (Chinese names always do: a few family names are borne by many): a value shared by many records (a frequent surname, house number 1,
   a big suburb) is agreed on by chance more often than the field's default says, so its chance of
   agreeing is taken from the data (term-frequency adjustment). Fields that state one fact (postcode,
   city, state, country) count once, and a move, which changes every part of an address at once,
   counts as one disagreement.

The module imports neither Flask nor Flask-AppBuilder: the CLI, the capture and edit screens and jobs
all call it.
"""
from __future__ import annotations

import math
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from rapidfuzz import fuzz
from rapidfuzz.distance import JaroWinkler, Levenshtein

from ..normalize import (
    InvalidValue,
    has_chinese,
    normalize_email,
    parse_phone,
    split_chinese_name,
)

FIELDS = ("first_name", "last_name", "name", "email", "phone", "company", "street_number", "address",
          "address2", "city", "state", "postcode", "country", "birthday")
DUPLICATE_SHARE = 0.1  # share of records assumed to be duplicates, for the prior odds
MIN_POPULATION = 1000  # smaller files are judged as if they had this many records
DEFAULT_THRESHOLD = 0.5
MAX_BLOCK = 30  # a key shared by more records than this is walked as a sorted neighbourhood
WINDOW = 4  # neighbours compared in the sorted-neighbourhood passes
NAME_PREFIX = 2  # letters of the other name that go with a name's phonetic code in the name key

_NON_WORD = re.compile(r"[\W_]+")
_DIGITS = re.compile(r"\d+")
_SOUNDEX = str.maketrans("abcdefghijklmnopqrstuvwxyz", "01230120022455012623010202")


# -- evidence per field ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Evidence:
    """Fellegi–Sunter weights of one field: `m` = P(agree | same person), `u` = P(agree | different people).

    `floor` is the similarity at or below which two values count as disagreeing; between it and 1 the
    weight rises linearly from the disagreement weight to the agreement weight (Winkler's adjustment
    for string comparators).
    """

    m: float
    u: float
    floor: float
    agree: float = field(init=False)
    disagree: float = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "agree", math.log2(self.m / self.u))
        object.__setattr__(self, "disagree", math.log2((1 - self.m) / (1 - self.u)))

    def weight(self, similarity: float, u: float | None = None) -> float:
        """Bits of evidence for a similarity in [0, 1]; `u` for a value more common than the field's default."""
        agree, disagree = self.agree, self.disagree
        if u is not None and u > self.u:
            agree, disagree = math.log2(self.m / u), math.log2((1 - self.m) / (1 - u))
        if similarity <= self.floor:
            return disagree
        return disagree + (agree - disagree) * (similarity - self.floor) / (1 - self.floor)


# m: the share of true duplicates whose values still agree (typos, moves, missing data). u: the chance that
# two different people agree, about one over the number of common values of the field. E-mail and phone
# disagree often for the same person (people have several), so their disagreement weighs little.
EVIDENCE: dict[str, Evidence] = {
    "email": Evidence(m=0.5, u=1e-7, floor=0.9),
    "phone": Evidence(m=0.5, u=1e-6, floor=0.99),
    "first_name": Evidence(m=0.9, u=0.01, floor=0.7),
    "last_name": Evidence(m=0.9, u=0.005, floor=0.7),
    "company": Evidence(m=0.8, u=0.01, floor=0.7),
    "street_number": Evidence(m=0.9, u=0.02, floor=0.5),
    "address": Evidence(m=0.9, u=0.001, floor=0.7),
    "address2": Evidence(m=0.9, u=0.01, floor=0.7),
    "city": Evidence(m=0.9, u=0.002, floor=0.7),
    "state": Evidence(m=0.9, u=0.2, floor=0.8),
    "postcode": Evidence(m=0.9, u=0.002, floor=0.5),
    "country": Evidence(m=0.95, u=0.5, floor=0.8),
    "birthday": Evidence(m=0.9, u=0.0001, floor=0.5),
}


def prior_bits(records: int) -> float:
    """Evidence needed for even odds among `records` records: log2 of the prior odds against a match."""
    return math.log2(max(records, MIN_POPULATION) / (2 * DUPLICATE_SHARE))


def probability(bits: float, records: int) -> float:
    """The score shown to people: the posterior probability that the pair is one person."""
    exponent = prior_bits(records) - bits
    if exponent > 60:
        return 0.0
    return 1.0 / (1.0 + 2.0 ** exponent)


def bits_for(threshold: float, records: int) -> float:
    """The evidence a score threshold in (0, 1) asks for, among `records` records."""
    return prior_bits(records) - math.log2((1 - threshold) / threshold)


# -- normalization -----------------------------------------------------------------------------------------

def clean_text(value) -> str:
    """Width and case folded, punctuation to single spaces."""
    if value is None:
        return ""
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", str(value)).casefold()).strip()


def _name(value) -> str:
    """A name as compared: pinyin for Chinese characters, without spaces (`Mei Ling` = `meiling`)."""
    text = clean_text(value)
    if has_chinese(text):
        text = _pinyin(text)
    return text.replace(" ", "")


@lru_cache(maxsize=100_000)
def _pinyin(text: str) -> str:
    """`text` with its Chinese characters in pinyin. Cached: the same names come back as candidates
    of one check after another."""
    # imported here: pypinyin loads a large dictionary, needed only once a name is Chinese
    from pypinyin import lazy_pinyin

    return " ".join(lazy_pinyin(text))


def _split_full_name(value) -> tuple[str, str]:
    """(given, family) of a full name: Chinese by its family name, else the last word is the family name."""
    raw = unicodedata.normalize("NFKC", str(value or "")).strip()
    family, given = split_chinese_name(raw)
    if family:
        return given or "", family
    words = clean_text(raw).split()
    if not words:
        return "", ""
    return " ".join(words[:-1]), words[-1]


def soundex(word: str) -> str:
    """American Soundex of a latin word (`robert` → r163); other text keeps its first four characters."""
    letters = [c for c in word if "a" <= c <= "z"]
    if not letters:
        return word[:4]
    codes = "".join(letters).translate(_SOUNDEX)
    out, previous = [letters[0]], codes[0]
    for code in codes[1:]:
        if code != previous and code != "0":
            out.append(code)
            if len(out) == 4:
                break
        previous = code
    return "".join(out).ljust(4, "0")


def normalize_date(value) -> str:
    """YYYYMMDD for a date written Y-M-D, D/M/Y (or M/D/Y: a day-month swap is tolerated when compared)
    or as eight digits; a malformed date keeps its digits so that it can still be compared."""
    if value is None:
        return ""
    if hasattr(value, "strftime"):
        return value.strftime("%Y%m%d")
    parts = _DIGITS.findall(unicodedata.normalize("NFKC", str(value)))
    if len(parts) == 3 and all(len(p) <= 4 for p in parts):
        if len(parts[0]) == 4:
            year, month, day = parts
        elif len(parts[2]) == 4:
            day, month, year = parts
        else:
            return "".join(parts)
        return f"{year}{month.zfill(2)}{day.zfill(2)}"
    return "".join(parts)


def _values(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [v for v in value if v]


def _emails(value) -> frozenset[str]:
    found = set()
    for raw in _values(value):
        text = unicodedata.normalize("NFKC", raw).strip().casefold()
        if not text:
            continue
        try:
            found.add(normalize_email(text))
        except InvalidValue:
            if "@" in text:
                found.add(text)
    return frozenset(found)


def _phones(value, region: str) -> frozenset[str]:
    found = set()
    for raw in _values(value):
        try:
            found.add(parse_phone(raw, region))
        except InvalidValue:
            digits = "".join(_DIGITS.findall(unicodedata.normalize("NFKC", raw)))
            if len(digits) >= 6:  # not a valid number, but the same digits are still the same
                found.add(digits)
    return frozenset(found)


class Prepared:
    """A record with every value normalized once, and the codes blocking needs."""

    __slots__ = (
        "address",
        "address2",
        "birthday",
        "chinese",
        "city",
        "common",
        "company",
        "country",
        "emails",
        "first",
        "first_code",
        "id",
        "last",
        "last_code",
        "number",
        "phones",
        "postcode",
        "state",
    )

    def __init__(self, record: Mapping, region: str = "CN"):
        self.id = record.get("id")
        first, last = record.get("first_name"), record.get("last_name")
        if not (first and str(first).strip()) and not (last and str(last).strip()) and record.get("name"):
            first, last = _split_full_name(record.get("name"))
        self.chinese = has_chinese(first) or has_chinese(last)
        self.first, self.last = _name(first), _name(last)
        self.emails = _emails(record.get("email"))
        self.phones = _phones(record.get("phone"), region)
        self.company = clean_text(record.get("company"))
        self.number = clean_text(record.get("street_number")).replace(" ", "")
        self.address = clean_text(record.get("address"))
        self.address2 = clean_text(record.get("address2"))
        self.city = clean_text(record.get("city"))
        self.state = clean_text(record.get("state"))
        self.postcode = clean_text(record.get("postcode")).replace(" ", "").upper()
        self.country = clean_text(record.get("country"))
        self.birthday = normalize_date(record.get("birthday"))
        self.first_code = soundex(self.first) if self.first else ""
        self.last_code = soundex(self.last) if self.last else ""
        # attribute → chance that two different people agree on the value, where above the field's default
        self.common: dict[str, float] = dict(CHINESE_NAMES) if self.chinese else {}

    @property
    def sort_key(self) -> str:
        return f"{self.last} {self.first}"


def prepare(records: Iterable[Mapping], region: str = "CN") -> list[Prepared]:
    """Normalize records for `candidate_pairs` and `compare`; phones are read with `region` as default."""
    return [Prepared(record, region) for record in records]


# -- blocking ---------------------------------------------------------------------------------------------

def _swap_day_month(date: str) -> str | None:
    if len(date) == 8 and date[4:6] != date[6:8]:
        return date[:4] + date[6:8] + date[4:6]
    return None


def blocking_keys(r: Prepared) -> set[str]:
    """The keys under which a record looks for its duplicates; two records are compared if they share one."""
    keys = {"e" + e for e in r.emails} | {"p" + p for p in r.phones}
    if r.last:
        keys.add(f"n{r.last_code}{r.first[:NAME_PREFIX]}")
    if r.first:
        keys.add(f"n{r.first_code}{r.last[:NAME_PREFIX]}")  # one key space: swapped names still meet
    if r.postcode:
        if r.last:
            keys.add(f"o{r.last[:2]}{r.postcode}")
        if r.first:
            keys.add(f"o{r.first[:2]}{r.postcode}")
        if r.number:
            keys.add(f"a{r.number}|{r.postcode}")
    if r.birthday:
        keys.add("d" + r.birthday)
        if swapped := _swap_day_month(r.birthday):
            keys.add("d" + swapped)
    if r.company and (r.last or r.first):
        keys.add(f"c{r.company}|{r.last_code or r.first_code}")
    return keys


def _window(members: list[int], window: int) -> Iterator[tuple[int, int]]:
    for x, i in enumerate(members):
        for j in members[x + 1:x + 1 + window]:
            yield i, j


def candidate_pairs(records: list[Prepared], *, max_block: int = MAX_BLOCK, window: int = WINDOW) -> list[tuple[int, int]]:
    """Index pairs (i < j) of records worth comparing: those sharing a blocking key, plus the neighbours of
    each record when all are sorted by name (family then given, and given then family)."""
    n = len(records)
    blocks: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        for key in blocking_keys(record):
            blocks[key].append(i)
    seen: set[int] = set()
    for members in blocks.values():
        size = len(members)
        if size < 2:
            continue
        if size <= max_block:
            for x in range(size):
                i = members[x]
                for y in range(x + 1, size):
                    j = members[y]
                    seen.add(i * n + j if i < j else j * n + i)
        else:
            members.sort(key=lambda k: records[k].sort_key)
            for i, j in _window(members, window):
                seen.add(i * n + j if i < j else j * n + i)
    names = [(f"{r.last} {r.first}", i) for i, r in enumerate(records) if r.last or r.first]
    names += [(f"{r.first} {r.last}", i) for i, r in enumerate(records) if r.first and r.last]
    names.sort()
    order = [i for _key, i in names]
    for i, j in _window(order, window):
        if i != j:
            seen.add(i * n + j if i < j else j * n + i)
    return [divmod(code, n) for code in sorted(seen)]


# -- value frequencies ---------------------------------------------------------------------------------

# Attributes whose values can be common enough to weaken agreement (`Smith`, house number 1, a big
# suburb); names are counted together because crossed names compare a given name with a family name.
_COUNTED = {"first": "name", "last": "name", "number": "street_number", "address": "address",
            "city": "city", "postcode": "postcode", "company": "company"}
MIN_COMMON = 5  # fewer sightings than this cannot be told apart from one person's duplicates
# Chinese names are far more concentrated than the fields' defaults assume: 王, 李 and 张 are each borne by
# about 7% of people, and single-character given names repeat often.
CHINESE_NAMES = {"last": 0.05, "first": 0.01}


def count_values(records: Iterable[Prepared]) -> dict[str, dict[str, int]]:
    """How many records hold each value of the counted fields."""
    counts: dict[str, dict[str, int]] = {group: defaultdict(int) for group in set(_COUNTED.values())}
    for record in records:
        for attr, group in _COUNTED.items():
            value = getattr(record, attr)
            if value:
                counts[group][value] += 1
    return counts


def mark_common(record: Prepared, counts: dict[str, dict[str, int]], records: int) -> None:
    """Note on `record` the chance that two different people share each of its common values."""
    common = dict(CHINESE_NAMES) if record.chinese else {}
    for attr, group in _COUNTED.items():
        value = getattr(record, attr)
        if value and (count := counts[group].get(value, 0)) >= MIN_COMMON:
            common[attr] = max(common.get(attr, 0.0), count / records)
    record.common = common


def note_frequencies(records: list[Prepared]) -> None:
    """Term-frequency adjustment: where a value is shared by many records, two different people agree on it
    more often than the field's default `u` says; record that chance on each record holding the value."""
    counts = count_values(records)
    for record in records:
        mark_common(record, counts, len(records))


# -- comparison -------------------------------------------------------------------------------------------

def date_similarity(a: str, b: str) -> float:
    """1 for the same date; high for day and month swapped or one digit mistyped or two digits transposed."""
    if a == b:
        return 1.0
    if len(a) == len(b) == 8 and a[:4] == b[:4] and a[4:6] == b[6:8] and a[6:8] == b[4:6]:
        return 0.9
    if len(a) == len(b):
        diff = [k for k in range(len(a)) if a[k] != b[k]]
        if len(diff) == 1:
            return 0.8
        if len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]:
            return 0.8
    if Levenshtein.distance(a, b, score_cutoff=1) <= 1:
        return 0.7
    return 0.0


_jw = JaroWinkler.normalized_similarity
_code = Levenshtein.normalized_similarity


def _words(a: str, b: str) -> float:
    return max(JaroWinkler.normalized_similarity(a, b), fuzz.token_sort_ratio(a, b) / 100)


def _exact(a: str, b: str) -> float:
    return 1.0 if a == b else 0.0


_EMAIL, _PHONE = EVIDENCE["email"], EVIDENCE["phone"]
_FIRST, _LAST = EVIDENCE["first_name"], EVIDENCE["last_name"]
_ADDRESS, _ADDRESS2 = EVIDENCE["address"], EVIDENCE["address2"]
_NUMBER, _COMPANY, _BIRTHDAY = EVIDENCE["street_number"], EVIDENCE["company"], EVIDENCE["birthday"]
_POSTCODE, _CITY, _STATE, _COUNTRY = (EVIDENCE[name] for name in ("postcode", "city", "state", "country"))


def _u(a: Prepared, b: Prepared, attr_a: str, attr_b: str) -> float | None:
    """The chance of agreeing by chance when one of the two values is common (else the field's default)."""
    if a.common or b.common:
        return max(a.common.get(attr_a, 0.0), b.common.get(attr_b, 0.0)) or None
    return None


def _names(a: Prepared, b: Prepared) -> tuple[float, float]:
    """Given- and family-name weights, straight or crossed (swapped names), whichever fits better."""
    af, al, bf, bl = a.first, a.last, b.first, b.last
    first = _FIRST.weight(_jw(af, bf), _u(a, b, "first", "first")) if af and bf else 0.0
    last = _LAST.weight(_jw(al, bl), _u(a, b, "last", "last")) if al and bl else 0.0
    if (af == bf or not (af and bf)) and (al == bl or not (al and bl)):
        return first, last
    crossed_first = _FIRST.weight(_jw(af, bl), _u(a, b, "first", "last")) if af and bl else 0.0
    crossed_last = _LAST.weight(_jw(al, bf), _u(a, b, "last", "first")) if al and bf else 0.0
    if crossed_first + crossed_last > first + last:
        return crossed_first, crossed_last
    return first, last


def _place(a: Prepared, b: Prepared) -> float | None:
    """Postcode, city, state and country say one thing (where someone lives): they count once, as the
    strongest of them, so that one fact is not taken for four independent ones. None when not known."""
    weights = []
    if a.postcode and b.postcode:
        if a.postcode == b.postcode:
            return _POSTCODE.weight(1.0, _u(a, b, "postcode", "postcode"))
        weights.append(_POSTCODE.weight(_code(a.postcode, b.postcode)))
    if a.city and b.city:
        weights.append(_CITY.weight(_jw(a.city, b.city), _u(a, b, "city", "city")))
    if a.state and b.state:
        weights.append(_STATE.weight(_jw(a.state, b.state)))
    if a.country and b.country:
        weights.append(_COUNTRY.weight(1.0 if a.country == b.country else 0.0))
    if not weights:
        return None
    best = max(weights)
    return best if best > 0 else min(weights)


def compare(a: Prepared, b: Prepared) -> tuple[float, list[str]]:
    """Evidence in bits that `a` and `b` are the same person, and the fields that speak for it."""
    total = 0.0
    reasons: list[str] = []
    if a.emails and b.emails:
        if a.emails.isdisjoint(b.emails):
            total += _EMAIL.disagree
        else:
            total += _EMAIL.agree
            reasons.append("email")
    if a.phones and b.phones:
        if a.phones.isdisjoint(b.phones):
            total += _PHONE.disagree
        else:
            total += _PHONE.agree
            reasons.append("phone")
    first, last = _names(a, b)
    total += first + last
    if first > 0 or last > 0:
        reasons.append("name")
    if a.birthday and b.birthday:
        w = _BIRTHDAY.weight(date_similarity(a.birthday, b.birthday))
        total += w
        if w > 0:
            reasons.append("birthday")
    # Where someone lives: its parts add up when they agree, but a move makes them all disagree at
    # once, so only the strongest disagreement counts.
    line1 = _ADDRESS.weight(_words(a.address, b.address), _u(a, b, "address", "address")) \
        if a.address and b.address else 0.0
    line2 = _ADDRESS2.weight(_words(a.address2, b.address2)) if a.address2 and b.address2 else 0.0
    number = _NUMBER.weight(_code(a.number, b.number), _u(a, b, "number", "number")) \
        if a.number and b.number else 0.0
    place = _place(a, b)
    if line1 > 0 or line2 > 0 or number > 0:
        reasons.append("address")
    if place is None:
        place = 0.0
    elif place > 0:
        reasons.append("locality")
    total += ((line1 if line1 > 0 else 0.0) + (line2 if line2 > 0 else 0.0) + (number if number > 0 else 0.0)
              + (place if place > 0 else 0.0) + min(0.0, line1, line2, number, place))
    if a.company and b.company:
        w = _COMPANY.weight(_words(a.company, b.company), _u(a, b, "company", "company"))
        total += w
        if w > 0:
            reasons.append("company")
    return total, reasons


# -- finding duplicates -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pair:
    """Two records that are probably the same person: their ids, the score in [0, 1] and why."""

    id_a: object
    id_b: object
    score: float
    reasons: tuple[str, ...]


@dataclass
class Result:
    """The pairs found, best first, and how much work it took."""

    pairs: list[Pair]
    records: int
    compared: int


def find_duplicates(records: Iterable[Mapping], *, threshold: float = DEFAULT_THRESHOLD, region: str = "CN",
                    prepared: list[Prepared] | None = None) -> Result:
    """Every pair of `records` whose score reaches `threshold`, comparing only blocked candidates."""
    items = prepared if prepared is not None else prepare(records, region)
    note_frequencies(items)
    needed = bits_for(threshold, len(items))
    pairs = []
    candidates = candidate_pairs(items)
    for i, j in candidates:
        bits, reasons = compare(items[i], items[j])
        if bits >= needed:
            pairs.append(Pair(items[i].id, items[j].id, round(probability(bits, len(items)), 4), tuple(reasons)))
    pairs.sort(key=lambda p: -p.score)
    return Result(pairs=pairs, records=len(items), compared=len(candidates))


class DuplicateIndex:
    """Existing records, indexed by blocking key, to check one new or edited record against (on capture,
    on edit). Feed it contacts and leads alike; ids only need to be unique across what is added."""

    def __init__(self, records: Iterable[Mapping] = (), *, region: str = "CN"):
        self.region = region
        self._records: dict[object, Prepared] = {}
        self._blocks: dict[str, set] = defaultdict(set)
        self._counts = count_values(())
        self.add(records)

    def add(self, records: Iterable[Mapping]) -> None:
        """Index (or re-index) records."""
        for record in records:
            self.remove(record.get("id"))
            item = Prepared(record, self.region)
            self._records[item.id] = item
            for key in blocking_keys(item):
                self._blocks[key].add(item.id)
            self._count(item, 1)

    def remove(self, record_id) -> None:
        """Forget a record (deleted, or about to be re-indexed after an edit)."""
        item = self._records.pop(record_id, None)
        if item is not None:
            for key in blocking_keys(item):
                self._blocks[key].discard(record_id)
            self._count(item, -1)

    def _count(self, item: Prepared, step: int) -> None:
        for attr, group in _COUNTED.items():
            if value := getattr(item, attr):
                self._counts[group][value] += step

    def matches(self, record: Mapping, *, threshold: float = DEFAULT_THRESHOLD) -> list[Pair]:
        """Indexed records that are probably the same person as `record` (itself excepted), best first."""
        item = Prepared(record, self.region)
        candidates: set = set()
        for key in blocking_keys(item):
            members = self._blocks.get(key, ())
            if len(members) > MAX_BLOCK:  # a crowded key: only the members closest by name
                members = sorted(members, key=lambda k: _jw(self._records[k].sort_key, item.sort_key),
                                 reverse=True)[:WINDOW]
            candidates.update(members)
        candidates.discard(item.id)
        size = len(self._records)
        needed = bits_for(threshold, size)
        mark_common(item, self._counts, size)
        found = []
        for other_id in candidates:
            other = self._records[other_id]
            mark_common(other, self._counts, size)
            bits, reasons = compare(item, other)
            if bits >= needed:
                found.append(Pair(item.id, other_id, round(probability(bits, size), 4), tuple(reasons)))
        return sorted(found, key=lambda p: -p.score)


def evaluate(found: Iterable[tuple], truth: Iterable[tuple]) -> dict[str, float]:
    """Precision, recall and F1 of found pairs against the true pairs (order within a pair ignored)."""
    got = {frozenset((str(a), str(b))) for a, b, *_ in found}
    true = {frozenset((str(a), str(b))) for a, b, *_ in truth}
    hits = len(got & true)
    precision = hits / len(got) if got else 0.0
    recall = hits / len(true) if true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "found": len(got), "true": len(true),
            "correct": hits}
