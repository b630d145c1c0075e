"""`bigledger crm dedupe`: likely duplicate people among the CRM's contacts, or in a file before import."""
from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
from flask_babel import gettext
from sqlalchemy import select

from bigledger_core.cli import with_appcontext

from .common.dedupe import DEFAULT_THRESHOLD, FIELDS, Pair, Result, find_duplicates


def contact_records(session, ids=None, *, merged: bool = False) -> list[dict]:
    """Every contact (merged ones excepted), or those of `ids` (merged ones too with `merged`), as dedupe
    records: names, e-mails, phones, first address and company (primary first). Five set-based queries,
    whatever the number of contacts."""
    from .models import Address, Company, Contact, ContactCompany, Email, Phone

    def only(column):
        return [column.in_(ids)] if ids is not None else [column.is_not(None)]

    query = select(Contact.id, Contact.full_name, Contact.family_name, Contact.given_name).order_by(Contact.id)
    if ids is not None:
        query = query.where(Contact.id.in_(ids))
    if not merged:
        query = query.where(Contact.merged_into_id.is_(None))
    records: dict[int, dict] = {}
    for contact_id, full, family, given in session.execute(query):
        records[contact_id] = {"id": contact_id, "name": full, "last_name": family, "first_name": given,
                               "email": [], "phone": []}
    if not records:
        return []
    for contact_id, address in session.execute(select(Email.contact_id, Email.address)
                                               .where(*only(Email.contact_id)).order_by(Email.id)):
        if contact_id in records:
            records[contact_id]["email"].append(address)
    for contact_id, e164, raw in session.execute(select(Phone.contact_id, Phone.e164, Phone.raw)
                                                 .where(*only(Phone.contact_id)).order_by(Phone.id)):
        if contact_id in records:
            records[contact_id]["phone"].append(e164 or raw)
    for row in session.execute(select(Address.contact_id, Address.street, Address.district, Address.city,
                                      Address.province, Address.postcode, Address.country)
                               .where(*only(Address.contact_id))
                               .order_by(Address.contact_id, Address.is_primary.desc(), Address.id)):
        record = records.get(row.contact_id)
        if record is not None and "address" not in record:
            record.update(address=row.street, address2=row.district, city=row.city, state=row.province,
                          postcode=row.postcode, country=row.country)
    for contact_id, name in session.execute(
            select(ContactCompany.contact_id, Company.name).join(Company, Company.id == ContactCompany.company_id)
            .where(*only(ContactCompany.contact_id))
            .order_by(ContactCompany.contact_id, ContactCompany.is_primary.desc(), ContactCompany.id)):
        record = records.get(contact_id)
        if record is not None and "company" not in record:
            record["company"] = name
    return list(records.values())


def lead_and_contact_records(session) -> list[dict]:
    """Leads still worked and every contact, ids written `lead:12` and `contact:5`: leads are checked
    against each other and against contacts."""
    from .leads.duplicates import lead_records

    return [{**r, "id": f"lead:{r['id']}"} for r in lead_records(session)] + \
        [{**r, "id": f"contact:{r['id']}"} for r in contact_records(session)]


@dataclass(frozen=True)
class Target:
    """What `bigledger crm dedupe TARGET` checks: a loader from the database session to dedupe records, and
    which of the pairs found belong to the target."""

    load: Callable
    keep: Callable[[Pair], bool] = lambda pair: True


def _has_lead(pair: Pair) -> bool:
    return str(pair.id_a).startswith("lead:") or str(pair.id_b).startswith("lead:")


TARGETS: dict[str, Target] = {"contacts": Target(contact_records), "leads": Target(lead_and_contact_records, _has_lead)}


def reason_labels() -> dict[str, str]:
    """How the fields that speak for a pair are named to people."""
    return {"email": gettext("same e-mail"), "phone": gettext("same phone"), "name": gettext("name"),
            "birthday": gettext("date of birth"), "address": gettext("address"), "locality": gettext("place"),
            "company": gettext("company")}


def _field_map(pairs: tuple[str, ...], headers: list[str], file_name: str) -> dict[str, str]:
    """{column: field} from COLUMN=FIELD options; without any, the columns named like a field."""
    if not pairs:
        return {h: h.strip().lower() for h in headers if h.strip().lower() in FIELDS}
    mapping = {}
    for pair in pairs:
        column, sep, target = pair.rpartition("=")
        column, target = column.strip(), target.strip().lower()
        if not sep or not column or not target:
            raise click.ClickException(gettext("--map %(value)s is not COLUMN=FIELD.", value=pair))
        if target not in FIELDS:
            raise click.ClickException(gettext("--map %(value)s: %(field)s is not a contact field; use one of "
                                               "%(fields)s.", value=pair, field=target, fields=", ".join(FIELDS)))
        if column not in headers:
            raise click.ClickException(gettext("%(file)s has no column %(column)s (its columns: %(columns)s).",
                                               file=file_name, column=column, columns=", ".join(headers)))
        mapping[column] = target
    return mapping


def file_records(path: Path, id_column: str, maps: tuple[str, ...]) -> list[dict]:
    """The rows of a CSV or XLSX file (UTF-8, UTF-8 with BOM, GBK…) as dedupe records."""
    from .importer import ImportFileError, open_table

    try:
        table = open_table(path)
        if id_column not in table.headers:
            raise click.ClickException(gettext("%(file)s has no column %(column)s (its columns: %(columns)s).",
                                               file=path.name, column=id_column, columns=", ".join(table.headers)))
        mapping = _field_map(maps, table.headers, path.name)
        if not mapping:
            raise click.ClickException(gettext("Nothing to compare in %(file)s: name its columns with --map "
                                               "COLUMN=FIELD.", file=path.name))
        records = []
        for _number, row in table:
            record = {"id": row[id_column]}
            for column, target in mapping.items():
                record[target] = row[column]
            records.append(record)
    except ImportFileError as exc:
        raise click.ClickException(str(exc)) from None
    return records


def _write(result: Result, output: Path, with_reasons: bool) -> None:
    labels = reason_labels()
    try:
        with output.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id_a", "id_b", "score"] + (["reasons"] if with_reasons else []))
            for pair in result.pairs:
                row = [pair.id_a, pair.id_b, f"{pair.score:.4f}"]
                if with_reasons:
                    row.append("; ".join(labels[r] for r in pair.reasons))
                writer.writerow(row)
    except OSError as exc:
        raise click.ClickException(gettext("Cannot write %(file)s: %(reason)s", file=output,
                                           reason=exc.strerror or exc)) from None


def _print(result: Result) -> None:
    labels = reason_labels()
    click.echo("\t".join([gettext("ID A"), gettext("ID B"), gettext("Score"), gettext("Reasons")]))
    for pair in result.pairs:
        click.echo(f"{pair.id_a}\t{pair.id_b}\t{pair.score:.4f}\t" + ", ".join(labels[r] for r in pair.reasons))


@click.command("dedupe")
@click.argument("target", required=False, type=click.Choice(list(TARGETS)))
@click.option("--file", "file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.csv",
              help="Check the rows of a CSV or XLSX file instead of the database (e.g. before importing it).")
@click.option("--id-column", metavar="COLUMN", help="The file's column that identifies each row (with --file).")
@click.option("--map", "maps", multiple=True, metavar="COLUMN=FIELD",
              help="Read a column as a field: " + ", ".join(FIELDS) + "; repeatable (with --file).")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=DEFAULT_THRESHOLD,
              show_default=True, help="Lowest score reported: the probability that the two are one person.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), metavar="PAIRS.csv",
              help="Write the pairs to a CSV file instead of the screen.")
@with_appcontext
def dedupe(target, file, id_column, maps, threshold, output):
    """Find likely duplicate people: among the CRM's contacts or leads (TARGET; leads are also checked
    against contacts), or in a FILE before importing it.

    Records are compared on e-mail and phone (exact), names (typos, pinyin, given and family name
    swapped), date of birth, address, place and company. Each pair gets a score, the probability that
    both records are the same person; pairs at or above --threshold are listed, best first. Pairs of
    contacts or leads are also kept for review (CRM → Duplicates); a pair decided there stays decided.
    """
    from .leads.duplicates import save_batch
    from .services import phone_region

    if target and file:
        raise click.ClickException(gettext("Give either %(target)s or --file, not both.", target=target))
    if file is None:
        if not target:
            raise click.ClickException(gettext("Say what to check: %(targets)s, or --file FILE.csv.",
                                               targets=", ".join(TARGETS)))
        if id_column or maps:
            raise click.ClickException(gettext("--id-column and --map only go with --file."))
        from bigledger_core.db import db

        records = TARGETS[target].load(db.session)
    else:
        if not id_column:
            raise click.ClickException(gettext("--file needs --id-column COLUMN: the column that identifies "
                                               "each row."))
        records = file_records(file, id_column, maps)
    result = find_duplicates(records, threshold=threshold, region=phone_region())
    if file is None:
        result.pairs = [pair for pair in result.pairs if TARGETS[target].keep(pair)]
        saved = save_batch(db.session, result.pairs, target)
        db.session.commit()
    if output:
        _write(result, output, with_reasons=file is None)
    else:
        _print(result)
    click.echo(gettext("%(pairs)s likely duplicate pairs among %(records)s records (%(compared)s pairs compared).",
                       pairs=len(result.pairs), records=result.records, compared=result.compared))
    if file is None:
        click.echo(gettext("For review (CRM → Duplicates): %(new)s new pairs, %(open)s to review in all; "
                           "%(decided)s already decided were left as they are.", **saved))
    if output:
        click.echo(gettext("Pairs written to %(file)s", file=output))
