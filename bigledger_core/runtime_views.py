"""Admin screens of the runtime: scheduled jobs, event deliveries, the message log."""
from __future__ import annotations

from flask import current_app, flash, redirect, url_for
from flask_appbuilder import BaseView, ModelView, expose, has_access
from flask_appbuilder.actions import action
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_babel import lazy_gettext as _l

from .db import db
from .i18n import current_locale
from .models import EventDelivery, Message

_TIME = "%Y-%m-%d %H:%M:%S"


class JobsView(BaseView):
    """Every job of the enabled modules: next and last run, outcome, and run now / pause / resume."""

    route_base = "/system/jobs"
    default_view = "list"
    class_permission_name = "SystemJobs"
    method_permission_name = {"list": "list", "control": "edit"}
    base_permissions = ["can_list", "can_edit"]

    @expose("/")
    @has_access
    def list(self):
        from .scheduler import job_statuses, nodes

        jobs = job_statuses(current_app, db.session, current_locale())
        return self.render_template("bigledger/jobs.html", jobs=jobs, nodes=nodes(db.session), fmt=_TIME)

    @expose("/<job_id>/<command>", methods=["POST"])
    @has_access
    def control(self, job_id: str, command: str):
        from .scheduler import job_statuses, request_job

        known = {job.id for job in job_statuses(current_app, db.session)}
        if job_id not in known or command not in {"run", "pause", "resume"}:
            flash(str(_l("Unknown job or command: %(job)s %(command)s", job=job_id, command=command)), "danger")
            return redirect(url_for("JobsView.list"))
        request_job(db.session, job_id, run_now=command == "run",
                    paused={"pause": True, "resume": False}.get(command))
        db.session.commit()
        messages = {"run": _l("Job %(job)s will run within a few seconds.", job=job_id),
                    "pause": _l("Job %(job)s is paused.", job=job_id),
                    "resume": _l("Job %(job)s is resumed.", job=job_id)}
        flash(str(messages[command]), "success")
        return redirect(url_for("JobsView.list"))


class DeliveriesView(ModelView):
    """One row per event and subscriber; failed and dead deliveries can be retried."""

    datamodel = SQLAInterface(EventDelivery)
    class_permission_name = "SystemDeliveries"
    base_permissions = ["can_list", "can_show", "can_retry"]
    list_title = _l("Event deliveries")
    show_title = _l("Event delivery")
    list_columns = ["id", "event.name", "subscriber", "status", "attempts", "next_attempt_at", "delivered_at",
                    "event.occurred_at"]
    show_columns = ["id", "event.id", "event.name", "event.version", "event.occurred_at", "subscriber", "status",
                    "attempts", "next_attempt_at", "delivered_at", "last_error", "event.payload"]
    search_columns = ["status", "subscriber", "event", "attempts", "next_attempt_at", "delivered_at"]
    order_columns = ["id", "status", "subscriber", "attempts", "next_attempt_at", "delivered_at"]
    base_order = ("id", "desc")
    label_columns = {"id": _l("Delivery"), "event.name": _l("Event"), "event.id": _l("Event id"),
                     "event.version": _l("Version"), "event.occurred_at": _l("Occurred at"),
                     "event.payload": _l("Payload"), "event": _l("Event"), "subscriber": _l("Subscriber"),
                     "status": _l("Status"), "attempts": _l("Attempts"), "next_attempt_at": _l("Next attempt"),
                     "delivered_at": _l("Delivered at"), "last_error": _l("Last error")}

    @action("retry", _l("Retry"), _l("Deliver the selected events again?"), "fa-repeat")
    def retry(self, items):
        from .events import retry

        items = items if isinstance(items, list) else [items]
        count = retry(db.session, ids=[item.id for item in items])
        db.session.commit()
        flash(str(_l("%(count)d deliveries will be retried.", count=count)), "success")
        return redirect(url_for("DeliveriesView.list"))


class MessagesView(ModelView):
    """The message log: what was queued, sent or failed, with the provider's answer."""

    datamodel = SQLAInterface(Message)
    class_permission_name = "SystemMessages"
    base_permissions = ["can_list", "can_show", "can_retry"]
    list_title = _l("Messages")
    show_title = _l("Message")
    list_columns = ["id", "created_at", "channel", "to_address", "subject", "status", "attempts", "sent_at"]
    show_columns = ["id", "channel", "status", "to_name", "to_address", "from_name", "from_address", "subject",
                    "body_text", "message_id", "provider", "provider_message_id", "attempts", "next_attempt_at",
                    "last_error", "source", "created_at", "sent_at"]
    search_columns = ["status", "channel", "to_address", "subject", "provider", "source", "created_at", "sent_at"]
    order_columns = ["id", "created_at", "status", "to_address", "sent_at", "attempts"]
    base_order = ("id", "desc")
    label_columns = {"id": _l("Message"), "created_at": _l("Queued at"), "channel": _l("Channel"),
                     "to_address": _l("To"), "to_name": _l("Recipient name"), "from_address": _l("From"),
                     "from_name": _l("Sender name"), "subject": _l("Subject"), "status": _l("Status"),
                     "attempts": _l("Attempts"), "sent_at": _l("Sent at"), "body_text": _l("Text"),
                     "message_id": _l("Message-ID"), "provider": _l("Provider"),
                     "provider_message_id": _l("Provider message id"), "next_attempt_at": _l("Next attempt"),
                     "last_error": _l("Last error"), "source": _l("Source")}

    @action("retry", _l("Retry"), _l("Send the selected failed messages again?"), "fa-repeat")
    def retry(self, items):
        from .mail.outbound import retry

        items = items if isinstance(items, list) else [items]
        count = retry(db.session, ids=[item.id for item in items])
        db.session.commit()
        flash(str(_l("%(count)d messages queued again.", count=count)), "success")
        return redirect(url_for("MessagesView.list"))
