"""The CRM module's manifest and hook implementations (thin: it wires the CRM's parts to the host)."""
from pathlib import Path

from bigledger_core import __version__, hookimpl

from . import documents, events, models, services  # noqa: F401  (tables, flush and commit rules)
from .leads import events as lead_events
from .leads import models as lead_models  # noqa: F401
from .nurture import models as nurture_models  # noqa: F401
from .pipeline import events as pipeline_events
from .pipeline import models as pipeline_models  # noqa: F401
from .pipeline import services as pipeline_services
from .pipeline import summary as pipeline_summary  # noqa: F401  (keeps the deal summary in step)

# Every CRM screen and API names its permission "Crm…" so that roles can be written as patterns.
_CRM = r"^(CRM|Crm.*)$"
_READ = r"^(can_list|can_show|can_get|can_info|can_download|can_export|menu_access)$"
_WRITE = r"^(can_list|can_show|can_add|can_edit|can_get|can_post|can_put|can_info|can_download|can_export|can_import|menu_access|can_.*_action|mulexport)$"
_API = r"^(can_get|can_post|can_put|can_delete|can_info)$"


@hookimpl
def bigledger_manifest():
    return {"name": "crm", "version": __version__,
            "label": {"zh": "客户关系管理", "en": "Customer relationship management"},
            "requires": [],
            "description": {"zh": "联系人、潜客、销售管道、营销与客户服务",
                            "en": "Contacts, leads, sales pipeline, marketing and customer service"}}


@hookimpl
def bigledger_roles():
    return [
        {"name": "Sales Manager", "permissions": [(_CRM, ".*"), (r"^(Teams|Security)$", _READ)]},
        {"name": "Sales Rep", "permissions": [(r"^(CRM|Crm(Customer|Contact|Company|Tag|Import|Segment|Lead|Duplicate|Deal|Board|Forecast|Competitor|Activity|Quote|Document|Task).*)$", _WRITE)]},
        {"name": "Marketing", "permissions": [
            (r"^(CRM|Crm(Customer|Lead|Campaign|Segment|Template|EmailTemplate|Sequence|Enrollment|Nurture|Form|Contact|Company|Tag|Import).*)$", _WRITE),
            (r"^Crm(Privacy|Suppression).*$", r"^(can_list|can_show|can_add|can_delete|can_get|can_post|can_export|can_erase|menu_access)$")]},
        {"name": "Support Agent", "permissions": [(r"^(CRM|Crm(Customer|Ticket|Contact|Company|Knowledge|Activity).*)$", _WRITE)]},
        {"name": "Integrator", "permissions": [(_CRM, _API)], "record_scope": "all", "api_only": True},
    ]


@hookimpl
def bigledger_migration_dirs():
    return [str(Path(__file__).parent / "migrations" / "versions")]


@hookimpl
def bigledger_cli_commands():
    from .cli import crm

    return [crm]


@hookimpl
def bigledger_register_views(appbuilder):
    from flask_babel import lazy_gettext as _l

    from .import_views import CrmImportView
    from .pipeline.views import register as register_pipeline
    from .views import register

    register(appbuilder)
    register_pipeline(appbuilder)
    from .leads.api import register as register_lead_api
    from .leads.views import register as register_lead_views

    register_lead_views(appbuilder)
    register_lead_api(appbuilder)
    from .leads import assignment, conversion, duplicates, form_views, roi

    for part in (form_views, assignment, duplicates, conversion, roi):
        part.register(appbuilder)
    from .nurture import register as register_nurture

    register_nurture(appbuilder)
    appbuilder.add_view(CrmImportView, "CrmImport", label=_l("Import"), icon="fa-upload",
                        category="CRM", category_label=_l("CRM"))


@hookimpl
def bigledger_load_demo(session, users):
    from .demo import load
    from .leads.demo import load as load_leads
    from .nurture.demo import load as load_nurturing
    from .pipeline.demo import load as load_deals

    load(session, users)
    load_deals(session, users)
    load_leads(session, users)
    load_nurturing(session, users)


@hookimpl
def bigledger_jobs():
    return [{"id": "crm.documents_gc", "func": "plugins.crm.documents:collect_garbage", "trigger": "cron",
             "trigger_args": {"hour": 3, "minute": 41}, "misfire_grace_time": 3600,
             "label": {"zh": "清理无主文档文件", "en": "Remove unused document files"}},
            {"id": "crm.rescore_leads", "func": "plugins.crm.leads.services:rescore_job", "trigger": "interval",
             "trigger_args": {"seconds": 60}, "misfire_grace_time": 300, "record_runs": False,
             "label": {"zh": "按新评分规则重新评分潜客", "en": "Rescore leads with new scoring rules"}},
            {"id": "crm.form_tokens_gc", "func": "plugins.crm.leads.form_views:forget_used_tokens",
             "trigger": "cron", "trigger_args": {"minute": 17}, "misfire_grace_time": 3600,
             "label": {"zh": "清理过期的表单令牌记录", "en": "Forget expired web form tokens"}},
            {"id": "crm.nurture", "func": "plugins.crm.nurture.services:run_job", "trigger": "interval",
             "trigger_args": {"seconds": 60}, "misfire_grace_time": 300, "record_runs": False,
             "label": {"zh": "执行潜客培育序列的到期步骤", "en": "Run due nurturing sequence steps"}}]


@hookimpl
def bigledger_event_types():
    return events.event_types() + pipeline_events.event_types() + lead_events.event_types()


@hookimpl
def crm_validate_stage_change(deal, stage):
    from bigledger_core.db import db

    return pipeline_services.missing_activities(db.session, deal, stage)


@hookimpl
def bigledger_inbound_message(event):
    from .leads.inbound import handle
    from .nurture.services import handle_inbound

    handle(event)
    handle_inbound(event)



@hookimpl
def crm_customers(company_ids, contact_ids, external_ids):
    from bigledger_core.db import db

    from .customer_services import customers

    return customers(db.session, company_ids, contact_ids, external_ids)


@hookimpl
def crm_find_contact(phone, email):
    from bigledger_core.db import db

    from .customer_services import find_contact

    return find_contact(db.session, phone, email)


@hookimpl
def crm_create_contact(data):
    from bigledger_core.db import db

    from .customer_services import create_contact

    return create_contact(db.session, data)


@hookimpl
def crm_pipelines():
    from bigledger_core.db import db

    from .customer_services import pipelines

    return pipelines(db.session)
