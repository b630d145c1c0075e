"""Duplicate detection: quality on FEBRL1 and on generated people, and speed of the file mode on 100,000.

    .venv/bin/python -m benchmarks.dedupe [--records 100000] [--duplicates 0.1] [--seed 7]

Generates person records FEBRL-style (originals from skewed name, street and place frequencies, then
duplicates with typos, swapped given and family names, missing values, malformed dates, moved house,
Chinese names written in pinyin, phones in other formats), writes them to a CSV and runs
`bigledger crm dedupe --file` on it in-process. Reports candidate pairs compared, pairs/s, precision,
recall and F1, and the ratio against the physical limit measured in the same run: reading the same CSV
and normalizing every record (no comparison at all). Also reports FEBRL1 and three smaller generated
sets. Prints a table and writes `benchmarks/results/dedupe.json`.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import itertools
import os
import random
import tempfile
import time
from pathlib import Path

from .common import write_results

ROOT = Path(__file__).resolve().parent.parent
FEBRL = Path("/work/shared/data/febrl")
FEBRL_COPY = ROOT / "tests" / "data" / "febrl"
FEBRL_MAP = {"given_name": "first_name", "surname": "last_name", "street_number": "street_number",
             "address_1": "address", "address_2": "address2", "suburb": "city", "postcode": "postcode",
             "state": "state", "date_of_birth": "birthday"}
COLUMNS = ["rec_id", "given_name", "surname", "street_number", "address_1", "address_2", "suburb", "postcode",
           "state", "date_of_birth", "email", "phone"]
_ONSETS = ["b", "br", "c", "ch", "cl", "d", "dr", "f", "fr", "g", "gr", "h", "j", "k", "l", "m", "n", "p", "pr",
           "r", "s", "sh", "st", "t", "tr", "v", "w", "z", ""]
_VOWELS = ["a", "e", "i", "o", "u", "ay", "ee", "ie", "oo", "ea", "ou"]
_CODAS = ["", "", "n", "r", "l", "s", "t", "m", "ck", "nd", "rt", "ll", "tt", "ng", "x"]
_STREET_TYPES = ["street", "road", "avenue", "place", "court", "crescent", "drive", "close", "circuit", "lane"]
_STATES = ["nsw", "vic", "qld", "wa", "sa", "tas", "act", "nt"]
_STATE_WEIGHTS = [32, 26, 20, 10, 7, 2, 2, 1]
_HANZI_FAMILY = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
_HANZI_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰建国文红梅志新海波春燕晶亮林辉鹏飞宇浩然欣怡"


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables))


def _pool(rng: random.Random, size: int, syllables=(1, 2, 3)) -> list[str]:
    words: dict[str, None] = {}
    while len(words) < size:
        word = _word(rng, rng.choice(syllables))
        if len(word) >= 3:
            words[word] = None
    return list(words)


def _zipf(size: int, power: float = 1.0) -> list[float]:
    """Cumulative weights of a Zipf law over `size` ranks (for `random.choices(cum_weights=…)`)."""
    return list(itertools.accumulate(1.0 / (rank ** power) for rank in range(1, size + 1)))


class People:
    """A synthetic population: pools of names, streets and places with realistic, skewed frequencies."""

    def __init__(self, seed: int, chinese_share: float = 0.0, contact_share: float = 0.0):
        rng = self.rng = random.Random(seed)
        self.given, self.family = _pool(rng, 1500, (1, 2)), _pool(rng, 6000)
        self.given_w, self.family_w = _zipf(len(self.given), 0.6), _zipf(len(self.family), 0.6)
        self.streets = [f"{w} {rng.choice(_STREET_TYPES)}" for w in _pool(rng, 4000)]
        self.extra = [f"{w} {rng.choice(['village', 'park', 'estate', 'house', 'downs', 'plaza', 'hill'])}"
                      for w in _pool(rng, 1500)]
        self.places = [(place, f"{rng.randint(800, 7999):04d}", rng.choices(_STATES, _STATE_WEIGHTS)[0])
                       for place in _pool(rng, 2500)]
        self.places_w = _zipf(len(self.places), 0.5)
        self.chinese_share, self.contact_share = chinese_share, contact_share

    def person(self, number: int) -> dict:
        rng = self.rng
        chinese = rng.random() < self.chinese_share
        if chinese:
            given = "".join(rng.choice(_HANZI_GIVEN) for _ in range(rng.choice((1, 2))))
            family = rng.choice(_HANZI_FAMILY)
        else:
            given = rng.choices(self.given, cum_weights=self.given_w)[0]
            family = rng.choices(self.family, cum_weights=self.family_w)[0]
        place, postcode, state = rng.choices(self.places, cum_weights=self.places_w)[0]
        born = dt.date(1920, 1, 1) + dt.timedelta(days=rng.randrange(33000))
        record = {
            "rec_id": f"rec-{number}-org", "given_name": given if rng.random() > 0.03 else "",
            "surname": family if rng.random() > 0.01 else "",
            "street_number": str(int(rng.lognormvariate(2.8, 1.0)) + 1) if rng.random() > 0.05 else "",
            "address_1": rng.choice(self.streets) if rng.random() > 0.03 else "",
            "address_2": rng.choice(self.extra) if rng.random() < 0.6 else "",
            "suburb": place, "postcode": postcode, "state": state,
            "date_of_birth": born.strftime("%Y%m%d") if rng.random() > 0.05 else "",
            "email": "", "phone": "",
        }
        if rng.random() < self.contact_share:
            latin = _latin(given) + "." + _latin(family)
            record["email"] = f"{latin}{rng.randint(1, 99)}@{rng.choice(['mail', 'post', 'corp'])}.example.com"
        if rng.random() < self.contact_share:
            record["phone"] = f"13{rng.randint(0, 9)}{rng.randint(0, 99999999):08d}"
        return record

    # -- corruption, FEBRL style ----------------------------------------------------------------------
    def duplicate(self, original: dict, number: int, max_changes: int) -> dict:
        rng = self.rng
        record = dict(original, rec_id=original["rec_id"].replace("-org", f"-dup-{number}"))
        for _ in range(rng.randint(1, max_changes)):
            kind = rng.choices(["typo", "typo2", "missing", "swap_names", "swap_words", "replace", "date", "move",
                                "format"], [30, 6, 14, 6, 4, 8, 12, 4, 6])[0]
            if kind == "swap_names":
                record["given_name"], record["surname"] = record["surname"], record["given_name"]
            elif kind == "date":
                record["date_of_birth"] = _bad_date(rng, record["date_of_birth"])
            elif kind == "move":  # a new address, same person
                place, postcode, state = rng.choices(self.places, cum_weights=self.places_w)[0]
                record.update(address_1=rng.choice(self.streets), suburb=place, postcode=postcode, state=state,
                              street_number=str(rng.randint(1, 200)), address_2="")
            elif kind == "format":
                record["email"] = record["email"].upper()
                if record["phone"]:
                    p = record["phone"]
                    record["phone"] = f"+86 {p[:3]}-{p[3:7]}-{p[7:]}"
                if _has_hanzi(record["surname"]) or _has_hanzi(record["given_name"]):
                    record["given_name"], record["surname"] = _latin(record["given_name"]), _latin(record["surname"])
            else:
                column = rng.choice(["given_name", "surname", "street_number", "address_1", "address_2", "suburb",
                                     "postcode", "state", "date_of_birth", "given_name", "surname"])
                value = record[column]
                if kind == "missing":
                    record[column] = ""
                elif kind == "swap_words" and " " in value:
                    words = value.split()
                    rng.shuffle(words)
                    record[column] = " ".join(words)
                elif kind == "replace" and column in ("given_name", "surname"):
                    pool, weights = (self.given, self.given_w) if column == "given_name" else (self.family,
                                                                                                 self.family_w)
                    record[column] = rng.choices(pool, cum_weights=weights)[0]
                elif value:
                    record[column] = _typo(rng, _typo(rng, value) if kind == "typo2" else value)
        return record

    def dataset(self, originals: int, duplicates: int, max_changes: int = 5) -> tuple[list[dict], list[tuple]]:
        """`originals` people and `duplicates` extra records of some of them (one to three each)."""
        records = [self.person(n) for n in range(originals)]
        truth = []
        made = 0
        while made < duplicates:
            original = records[self.rng.randrange(originals)]
            if "-dup-" in original["rec_id"] or original.get("_dups"):
                continue
            count = min(self.rng.choice((1, 1, 1, 2, 3)), duplicates - made)
            original["_dups"] = count
            copies = [self.duplicate(original, k, max_changes) for k in range(count)]
            ids = [original["rec_id"]] + [c["rec_id"] for c in copies]
            truth += [(a, b) for x, a in enumerate(ids) for b in ids[x + 1:]]
            records += copies
            made += count
        for record in records:
            record.pop("_dups", None)
        self.rng.shuffle(records)
        return records, truth


def _has_hanzi(text: str) -> bool:
    return any("\u4e00" <= c <= "\u9fff" for c in text)


def _latin(text: str) -> str:
    if not _has_hanzi(text):
        return text
    from pypinyin import lazy_pinyin

    return "".join(lazy_pinyin(text)).title()


def _typo(rng: random.Random, value: str) -> str:
    if not value:
        return value
    k = rng.randrange(len(value))
    letter = rng.choice("abcdefghijklmnopqrstuvwxyz" if not value[k].isdigit() else "0123456789")
    kind = rng.choice(["insert", "delete", "substitute", "transpose"])
    if kind == "insert":
        return value[:k] + letter + value[k:]
    if kind == "delete" and len(value) > 1:
        return value[:k] + value[k + 1:]
    if kind == "transpose" and k + 1 < len(value):
        return value[:k] + value[k + 1] + value[k] + value[k + 2:]
    return value[:k] + letter + value[k + 1:]


def _bad_date(rng: random.Random, value: str) -> str:
    if len(value) != 8:
        return value
    kind = rng.choice(["swap_day_month", "digit", "transpose", "missing", "month_13", "year"])
    if kind == "swap_day_month":
        return value[:4] + value[6:] + value[4:6]
    if kind == "missing":
        return ""
    if kind == "month_13":
        return value[:4] + "13" + value[6:]
    if kind == "year":
        return str(int(value[:4]) + rng.choice((-1, 1))) + value[4:]
    k = rng.randrange(8)
    if kind == "transpose" and k < 7:
        return value[:k] + value[k + 1] + value[k] + value[k + 2:]
    return value[:k] + str(rng.randrange(10)) + value[k + 1:]


def synthetic_set(records: int, *, duplicate_share: float = 0.1, seed: int = 7, chinese_share: float = 0.0,
                  contact_share: float = 0.0, max_changes: int = 5) -> tuple[list[dict], list[tuple]]:
    """`records` rows in FEBRL's columns (plus email, phone), about `duplicate_share` of them duplicates,
    and the true pairs."""
    duplicates = int(records * duplicate_share)
    people = People(seed, chinese_share=chinese_share, contact_share=contact_share)
    return people.dataset(records - duplicates, duplicates, max_changes)


def as_contacts(rows: list[dict]) -> list[dict]:
    """FEBRL-column rows as records for the dedupe engine."""
    mapping = dict(FEBRL_MAP, email="email", phone="phone")
    return [{"id": row["rec_id"], **{target: row.get(column, "") for column, target in mapping.items()}}
            for row in rows]


def write_csv(rows: list[dict], path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def febrl_folder() -> Path:
    return FEBRL if (FEBRL / "febrl1_records.csv").exists() else FEBRL_COPY


def load_febrl1() -> tuple[list[dict], list[tuple]]:
    """FEBRL1's records (soc_sec_id left out: a contact has none) and its true pairs."""
    folder = febrl_folder()
    with (folder / "febrl1_records.csv").open(encoding="utf-8", newline="") as handle:
        rows = [{k: v for k, v in row.items() if k != "soc_sec_id"} for row in csv.DictReader(handle)]
    with (folder / "febrl1_true_pairs.csv").open(encoding="utf-8", newline="") as handle:
        truth = [(row["id_a"], row["id_b"]) for row in csv.DictReader(handle)]
    return rows, truth


# -- measuring ------------------------------------------------------------------------------------------

def quality(name: str, rows: list[dict], truth: list[tuple]) -> dict:
    """Precision, recall, F1, time and candidate pairs of the engine at its default threshold."""
    from plugins.crm.common.dedupe import evaluate, find_duplicates

    start = time.perf_counter()
    result = find_duplicates(as_contacts(rows))
    seconds = time.perf_counter() - start
    scores = evaluate([(p.id_a, p.id_b) for p in result.pairs], truth)
    n = len(rows)
    return {"set": name, "records": n, "true_pairs": len(truth), "compared": result.compared,
            "compared_share_of_all_pairs": round(result.compared / (n * (n - 1) / 2), 5),
            "precision": round(scores["precision"], 4), "recall": round(scores["recall"], 4),
            "f1": round(scores["f1"], 4), "seconds": round(seconds, 3)}


def _read_and_normalize(path: Path) -> float:
    """The physical limit: read the CSV as the command does and normalize every record, comparing nothing."""
    from plugins.crm.common.dedupe import prepare
    from plugins.crm.importer import open_table

    start = time.perf_counter()
    mapping = dict(FEBRL_MAP, email="email", phone="phone")
    records = [{"id": row["rec_id"], **{t: row[c] for c, t in mapping.items()}} for _n, row in open_table(path)]
    prepare(records)
    return time.perf_counter() - start


def speed(records: int, duplicate_share: float, seed: int, folder: Path) -> dict:
    """Run the file mode of `bigledger crm dedupe` on `records` generated rows."""
    from click.testing import CliRunner

    from bigledger_core.cli import cli
    from plugins.crm.common.dedupe import evaluate
    from plugins.crm.common.dedupe import find_duplicates as engine

    rows, truth = synthetic_set(records, duplicate_share=duplicate_share, seed=seed, chinese_share=0.1,
                                contact_share=0.3)
    source, output = folder / "people.csv", folder / "pairs.csv"
    write_csv(rows, source)
    del rows
    limit_s = _read_and_normalize(source)
    compared = {}

    def counting(*args, **kwargs):
        result = engine(*args, **kwargs)
        compared["n"] = result.compared
        return result

    import plugins.crm.dedupe_cli as command_module

    command_module.find_duplicates, original = counting, command_module.find_duplicates
    args = ["crm", "dedupe", "--file", str(source), "--id-column", "rec_id", "--output", str(output)]
    for column, target in dict(FEBRL_MAP, email="email", phone="phone").items():
        args += ["--map", f"{column}={target}"]
    try:
        start = time.perf_counter()
        run = CliRunner().invoke(cli, args, env={"LC_ALL": "en_US.UTF-8", "BIGLEDGER_ENV": "development",
                                                 "BIGLEDGER_INSTANCE_PATH": str(folder)},
                                 catch_exceptions=False)
        seconds = time.perf_counter() - start
    finally:
        command_module.find_duplicates = original
    assert run.exit_code == 0, run.output
    with output.open(encoding="utf-8", newline="") as handle:
        found = [(row["id_a"], row["id_b"]) for row in csv.DictReader(handle)]
    scores = evaluate(found, truth)
    n = records
    return {"set": f"generated {n:,}", "records": n, "true_pairs": len(truth), "compared": compared["n"],
            "compared_share_of_all_pairs": round(compared["n"] / (n * (n - 1) / 2), 6),
            "precision": round(scores["precision"], 4), "recall": round(scores["recall"], 4),
            "f1": round(scores["f1"], 4), "seconds": round(seconds, 2),
            "pairs_per_s": round(compared["n"] / seconds), "records_per_s": round(n / seconds),
            "limit_read_normalize_s": round(limit_s, 2), "ratio_vs_limit": round(seconds / limit_s, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--duplicates", type=float, default=0.1, help="share of records that are duplicates")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows, truth = load_febrl1()
    results = [quality("FEBRL1", rows, truth)]
    for name, options in [("generated (FEBRL-like)", {}),
                          ("generated (many changes)", {"max_changes": 8, "duplicate_share": 0.3}),
                          ("generated (CRM: Chinese, phones, e-mails)", {"chinese_share": 0.4,
                                                                         "contact_share": 0.6})]:
        rows, truth = synthetic_set(5000, seed=args.seed + len(results), **options)
        results.append(quality(name, rows, truth))
    with tempfile.TemporaryDirectory() as tmp:
        results.append(speed(args.records, args.duplicates, args.seed, Path(tmp)))
    header = ["set", "records", "compared", "share of n²/2", "precision", "recall", "F1", "seconds"]
    keys = ["set", "records", "compared", "compared_share_of_all_pairs", "precision", "recall", "f1", "seconds"]
    print(" | ".join(f"{h:>13}" if i else f"{h:<42}" for i, h in enumerate(header)))
    for row in results:
        print(" | ".join(f"{row[k]!s:>13}" if i else f"{row[k]!s:<42}" for i, k in enumerate(keys)))
    last = results[-1]
    print(f"file mode: {last['records_per_s']:,} records/s, {last['pairs_per_s']:,} compared pairs/s; "
          f"reading + normalizing alone {last['limit_read_normalize_s']} s, ratio {last['ratio_vs_limit']}")
    write_results("dedupe", results, loadavg_before=load_before,
                  targets={"seconds_100k": 60, "f1_febrl1": 0.97,
                           "ratio_is": "file mode seconds / read+normalize seconds"})


if __name__ == "__main__":
    main()
