"""Documents on contacts and companies: stored once by content hash under the instance folder.

A file lives at `<instance>/documents/<2 hex>/<sha256>` while at least one document row names it. Rows
deleted through the ORM (a document, or the record it belongs to) remove their file after commit when no
other row still uses it; the nightly job `crm.documents_gc` removes any file no row names (e.g. after
a bulk delete in SQL), so a file is never left behind silently.
"""
from __future__ import annotations

import hashlib
import logging
import mimetypes
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from flask import current_app
from flask_babel import gettext
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from bigledger_core.db import db, utcnow

from .models import Document
from .services import CrmValidationError, Problem

log = logging.getLogger(__name__)
_CHUNK = 1 << 16
_GONE = "crm_documents_gone"


def storage_root() -> Path:
    return Path(current_app.config["INSTANCE_PATH"]) / "documents"


def path_for(sha256: str) -> Path:
    return storage_root() / sha256[:2] / sha256


def allowed_types() -> set[str]:
    return {t.strip().lower().lstrip(".") for t in current_app.config["BIGLEDGER_DOCUMENT_TYPES"] if t.strip()}


def max_bytes() -> int:
    return int(current_app.config["BIGLEDGER_DOCUMENT_MAX_MB"]) * 1024 * 1024


def _safe_name(filename: str) -> str:
    name = os.path.basename((filename or "").replace("\\", "/")).strip().replace("\x00", "")
    return name[:255] or "document"


def store(session: Session, stream: BinaryIO, filename: str, *, contact_id: int | None = None,
          company_id: int | None = None, user_id: int | None = None) -> Document:
    """Check type and size, hash while copying to a temporary file, keep one copy per content, and add
    the document row to `session` (the caller commits). Nothing is kept when a check fails."""
    name = _safe_name(filename)
    extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if extension not in allowed_types():
        raise CrmValidationError([Problem("file", gettext(
            "%(name)s: files of type .%(type)s are not accepted (allowed: %(allowed)s)", name=name,
            type=extension or "?", allowed=", ".join(sorted(allowed_types()))))])
    limit = max_bytes()
    root = storage_root()
    root.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    with tempfile.NamedTemporaryFile(dir=root, delete=False) as tmp:
        try:
            while chunk := stream.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise CrmValidationError([Problem("file", gettext(
                        "%(name)s is larger than %(mb)s MB", name=name,
                        mb=current_app.config["BIGLEDGER_DOCUMENT_MAX_MB"]))])
                digest.update(chunk)
                tmp.write(chunk)
            if size == 0:
                raise CrmValidationError([Problem("file", gettext("%(name)s is empty", name=name))])
        except BaseException:
            tmp.close()
            os.unlink(tmp.name)
            raise
    sha = digest.hexdigest()
    target = path_for(sha)
    if target.exists():
        os.unlink(tmp.name)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp.name, target)
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    document = Document(filename=name, content_type=content_type, size=size, sha256=sha, contact_id=contact_id,
                        company_id=company_id, uploaded_by_id=user_id, uploaded_at=utcnow())
    session.add(document)
    return document


@event.listens_for(Session, "after_flush")
def _remember_deleted(session: Session, _context) -> None:
    gone = [obj.sha256 for obj in session.deleted if isinstance(obj, Document)]
    if gone:
        session.info.setdefault(_GONE, set()).update(gone)


@event.listens_for(Session, "after_commit")
def _remove_unused(session: Session) -> None:
    hashes = session.info.pop(_GONE, set())
    if not hashes:
        return
    with Session(db.engine) as fresh:
        used = set(fresh.scalars(select(Document.sha256).where(Document.sha256.in_(hashes))))
    for sha in hashes - used:
        try:
            path_for(sha).unlink(missing_ok=True)
        except OSError:
            log.warning("could not remove document file %s; the nightly clean-up will retry", sha)


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(_GONE, None)


def collect_garbage() -> int:
    """Delete stored files no document row names (job `crm.documents_gc`). Returns how many."""
    root = storage_root()
    if not root.exists():
        return 0
    on_disk = {p.name: p for p in root.glob("??/*") if len(p.name) == 64}
    if not on_disk:
        return 0
    used: set[str] = set()
    names = list(on_disk)
    for start in range(0, len(names), 1000):
        used |= set(db.session.scalars(select(Document.sha256).where(Document.sha256.in_(names[start:start + 1000]))))
    removed = 0
    for sha, path in on_disk.items():
        if sha not in used:
            path.unlink(missing_ok=True)
            removed += 1
    if removed:
        log.info("removed %d document files no record uses", removed)
    return removed
