"""The hook contract between the BigLedger host and its plugins.

Every hook a plugin may implement is specified here; pluggy refuses an implementation whose name or
arguments do not match. `docs/plugins.md` explains each one with an example (a test keeps it complete).
None of these is `firstresult` unless its docstring says so: the host collects every plugin's answer.
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("bigledger")


# -- lifecycle: called by the host for every plugin of the deployment --------------------------------

@hookspec
def bigledger_manifest():
    """Called once when the plugin is loaded. Return a dict: `name`, `version`, `label` ({"zh", "en"}),
    `requires` (list of module names), optionally `description` ({"zh", "en"})."""


@hookspec
def bigledger_register_views(appbuilder):
    """Called once while the app is built. Add FAB views, REST APIs, menu links or Flask blueprints.
    Everything added here belongs to the plugin's module: hidden and answering 404 while it is disabled.
    Returns nothing."""


@hookspec
def bigledger_roles():
    """Called while the app is built. Return a list of role specs: `name`, `label` ({"zh", "en"}),
    `permissions` (list of (view-name regex, permission regex)), optionally `record_scope`
    (`"all"` or `"team"`, default `"team"`) and `api_only` (bool). Specs with one name are merged."""


@hookspec
def bigledger_cli_commands():
    """Called when the `bigledger` command starts. Return a list of click commands or groups to add
    under `bigledger` (e.g. a `crm` group becomes `bigledger crm …`)."""


@hookspec
def bigledger_translation_dirs():
    """Called while the app is built. Return a list of folders holding `<lang>/LC_MESSAGES/messages.mo`
    catalogs for the plugin's strings."""


@hookspec
def bigledger_migration_dirs():
    """Called before migrations run. Return a list of folders of Alembic revisions; the plugin's first
    revision carries `branch_labels = ("<module name>",)` so its tables come and go with the module."""


@hookspec
def bigledger_load_demo(session, users):
    """Called by `bigledger demo` for every enabled module, in dependency order. Add bilingual demo rows
    through `session` (committed by the host) without duplicating rows that already exist; `users`
    maps demo user names to `User` rows. Returns nothing."""


@hookspec
def bigledger_jobs():
    """Called when the active scheduler starts and whenever modules are switched on or off. Return a list
    of jobs: dicts (or `bigledger_core.scheduler.JobSpec`) with `id` (unique, e.g. "crm.nurture"),
    `func` ("package.module:function", called with no arguments inside an app context), `trigger`
    ("interval", "cron" or "date") and `trigger_args` (e.g. {"minutes": 5}), optionally `label`
    ({"zh", "en"}), `misfire_grace_time` (seconds, default 60), `coalesce` (default True),
    `max_instances` (default 1) and `record_runs` (default True: one row per run in the run log)."""


@hookspec
def bigledger_event_types():
    """Called once, the first time an event is emitted. Return a list of
    `bigledger_core.events.EventType(name, schema, version, description)` for the events this plugin
    emits; `emit` refuses an undeclared name or a payload the marshmallow `schema` refuses."""


@hookspec(firstresult=True)
def bigledger_send_message(channel, provider, message):
    """firstresult. Called by the scheduler for every queued message. `channel` is e.g. "email", `provider`
    the configured provider name (BIGLEDGER_MAIL_PROVIDER for e-mail), `message` a
    `bigledger_core.mail.outbound.OutgoingMessage`. Return the provider's message id when this plugin
    sent it, or None to let another plugin answer. Raise `TemporaryFailure` to retry later,
    `PermanentFailure` to give up."""


@hookspec
def bigledger_health():
    """Called by `/health`. Return a dict of extra, secret-free checks ({"name": "ok" or a short
    error}); any value other than "ok" marks the instance degraded."""


# -- host events: delivered after the change commits ------------------------------------------------

@hookspec
def bigledger_module_switched(event):
    """Event, after an admin switched a module on or off. `event.payload` holds `module`, `enabled`
    and `by` (user name or "cli"). Returns nothing."""


@hookspec
def bigledger_inbound_message(event):
    """Event, once per received e-mail (IMAP polling or `bigledger mail ingest`). `event.payload` holds
    `id` (the stored message), `message_id`, `in_reply_to`, `references`, `sender` ([name, address]),
    `to` and `cc` (lists of [name, address]), `subject`, `date`, `text`, `html`, `source`,
    `attachments` (list of {`id`, `filename`, `content_type`, `size`}) and `bounce`: for a delivery status
    notification, {`message_id` of the message it reports on, `failed`: [{`recipient`, `status`,
    `diagnostic`}]}, else null. Returns nothing."""


# -- CRM extension points: the CRM asks, other modules contribute -------------------------------------

@hookspec
def crm_timeline_entries(customer, limit):
    """Called when a customer's timeline is shown (360° view, API). `customer` is a
    `plugins.crm.queries.CustomerRef` (kind, id, name, company_ids, contact_ids). Return at most `limit`
    of your newest entries as dicts: `at` (ISO 8601 UTC), `kind` (e.g. "invoice"), `title`, optionally
    `detail` and `url`. They are merged with the CRM's activities, newest first."""


@hookspec
def crm_customer_panels(customer):
    """Called when a customer's 360° view is built. Return a list of panels: dicts with `title`
    ({"zh", "en"}) and `rows` (list of [label, value] pairs, values already formatted), optionally
    `url` (a page of your module about this customer) with `link`, its text ({"zh", "en"}). Keep it to a few
    quick queries: the view must stay fast."""


@hookspec
def crm_validate_stage_change(deal, stage):
    """Called before a deal moves to another stage, is won (`stage` is then the won stage) or moves past a
    stage. `deal` is a `plugins.crm.pipeline.models.Deal` still in its current stage, `stage` the target
    `Stage`. Return None (or an empty list) to allow the move, or a list of translated reasons to refuse it;
    the user sees every reason. Must not change the database."""


@hookspec
def crm_lead_facts(lead):
    """Called when a lead is created. `lead` is a `plugins.crm.leads.models.Lead` (flushed, with an id).
    Return facts you know about this person — fact keys or names (`"visited_pricing_page"`, `"访问了定价页"`)
    or dicts `{"fact": …, "count": n}` — to be recorded and scored; unknown facts are ignored."""


@hookspec
def crm_segment_conditions():
    """Called when a segment is validated or evaluated. Return a list of conditions segment rules may use:
    dicts with `field` (the rule's field name, e.g. "pos_spent"), `entity` ("contact" or "company"), `label`
    ({"zh", "en"}), `ops` (operator names), `check(op, value)` (returns the cleaned value or raises ValueError
    with a translated message) and `clause(op, value, ids)` (returns a SQLAlchemy condition on `ids`, the
    record id column, evaluated in SQL)."""


@hookspec
def crm_deal_warnings(deal):
    """Called after a deal was created on the deal screen, the board or the API (flushed, with an id). `deal` is a
    `plugins.crm.pipeline.models.Deal`. Return a list of translated warnings the user should see (e.g. the
    customer is on credit hold) or None; they never stop the deal. Must not change the database."""


@hookspec
def crm_deal_panels(deal):
    """Called when a deal's page is shown and for `GET /api/v1/crm/deal/<id>/extras`. `deal` is a
    `plugins.crm.pipeline.models.Deal`. Return panels as `crm_customer_panels` does (e.g. the delivery project of
    a won deal with its milestones). Keep it to a few quick queries; must not change the database."""


@hookspec
def crm_deal_line_checks(deal, lines):
    """Called when a deal's line items are shown (the deal's page, `GET /api/v1/crm/deal/<id>/extras`) and when a
    line is added or changed on the screen or through `/api/v1/crm/deal_line/`. `deal` is a
    `plugins.crm.pipeline.models.Deal`, `lines` a list of its `DealLine`s (a line being added has no id yet).
    Return a list of dicts, one for each line you know about: `line` (the line's index in `lines`), `status`
    ("available", "short", "unavailable" or "unknown"), `message` (translated) and optionally `available` (the
    `Decimal` quantity on hand), `price` (the `Decimal` unit price for this customer and quantity), `currency` and
    `price_list` (its name). A line added without a unit price takes the first `price` offered in the deal's
    currency; a "short" or "unavailable" line is flagged on the page and its message is a warning in the answer to
    the user who saved it. Must not change the database."""


@hookspec(firstresult=True)
def crm_exchange_rate(from_currency, to_currency, on):
    """firstresult. Called when a report converts amounts into one currency (never for the same currency).
    `from_currency`, `to_currency`: ISO codes; `on`: a `datetime.date`. Return the `Decimal` amount of
    `to_currency` one unit of `from_currency` buys on that day, or None when you have no rate (the report then
    names the missing pair as an error)."""


# -- CRM services: the CRM answers, other modules ask (bridges know the CRM through these and its events) -----

@hookspec(firstresult=True)
def crm_customers(company_ids, contact_ids, external_ids):
    """firstresult, answered by the CRM. Who these companies and contacts (and those whose `external_id`, the id
    another system gave them, is in `external_ids`; pass () for none) are, read in one go: a dict with
    `companies` and `contacts`, each {id: {"id", "name", "external_id", "merged_into", "phones", "emails"}}, where
    `merged_into` is the surviving record's id when the record was merged away (else None), `phones` the E.164
    numbers and `emails` the normalized addresses, primary first. Ids that do not exist are left out. Ask it
    through `PluginHost.ask`."""


@hookspec(firstresult=True)
def crm_pipelines():
    """firstresult, answered by the CRM. The sales pipelines, for a module's rules and pickers: a list of dicts
    `id`, `name`, `name_en`, `is_default`, `active`, by name."""


@hookspec(firstresult=True)
def crm_find_contact(phone, email):
    """firstresult, answered by the CRM. The id of the contact (never one merged away) with this phone number
    (E.164, see `bigledger_core.normalize.parse_phone`), else with this e-mail address (normalized), primary
    numbers and addresses first, then the oldest contact; None when nobody matches. Either may be None."""


@hookspec(firstresult=True)
def crm_create_contact(data):
    """firstresult, answered by the CRM. Create a contact as the CRM's own screens do (normalized, with its pinyin,
    `crm_contact_created` emitted in the caller's transaction) and return its id. `data`: `full_name`
    (required), optionally `phone` (E.164 or as written), `email`, `title`, `owner_id`. A bad value raises a
    `bigledger_core.errors.BigLedgerError` whose message, translated, names the field; nothing is written."""


# -- CRM events: delivered after the change commits ---------------------------------------------------

@hookspec
def crm_contact_created(event):
    """Event, after a contact was created (screen, API, import…). `event.payload`: `id`, `name`,
    `owner_id`, `team_id`, `external_id`. Returns nothing."""


@hookspec
def crm_contact_updated(event):
    """Event, after a contact was changed. `event.payload`: as `crm_contact_created` plus `changed`
    (the names of the changed fields). Returns nothing."""


@hookspec
def crm_contact_merged(event):
    """Event, after a contact was merged into another. `event.payload`: `survivor_id`, `merged_id`.
    Returns nothing."""


@hookspec
def crm_company_created(event):
    """Event, after a company was created. `event.payload`: `id`, `name`, `owner_id`, `team_id`,
    `external_id`. Returns nothing."""


@hookspec
def crm_company_updated(event):
    """Event, after a company was changed. `event.payload`: as `crm_company_created` plus `changed`.
    Returns nothing."""


@hookspec
def crm_company_merged(event):
    """Event, after a company was merged into another. `event.payload`: `survivor_id`, `merged_id`.
    Returns nothing."""


@hookspec
def crm_deal_created(event):
    """Event, after a deal was created. `event.payload`: `id`, `name`, `company_id`, `contact_id`, `owner_id`,
    `team_id`, `pipeline_id`, `stage_id`, `stage`, `status`, `currency`, `amount` and `probability` (decimal
    strings), `lead_id`, `source`. Returns nothing."""


@hookspec
def crm_deal_stage_changed(event):
    """Event, after a deal moved to another stage (including into the won stage). `event.payload`: as
    `crm_deal_created` plus `from_stage_id`, `from_stage` and `user_id`. Returns nothing."""


@hookspec
def crm_deal_won(event):
    """Event, after a deal was won. `event.payload`: as `crm_deal_created` plus `reason`, `closed_at` and
    `lines` (each `product`, `product_code`, `quantity`, `unit_price`, `discount`, `billing_period`,
    `term_months`, `total`). Returns nothing."""


@hookspec
def crm_deal_lost(event):
    """Event, after a deal was lost. `event.payload`: as `crm_deal_created` plus `reason`, `closed_at` and
    `lost_to` (the competitor's name or null). Returns nothing."""


@hookspec
def crm_lead_created(event):
    """Event, after a lead was created (form, e-mail, API, import, screen). `event.payload`: `id`, `name`,
    `email`, `phone`, `company_name`, `source`, `channel`, `campaign`, `owner_id`, `team_id`. Returns nothing."""


@hookspec
def crm_lead_qualified(event):
    """Event, once per lead, when its score reached the threshold. `event.payload`: `id`, `name`, `score`,
    `threshold`, `owner_id`, `team_id`, `source`, `channel`, `campaign`. Returns nothing."""


@hookspec
def crm_lead_converted(event):
    """Event, after a lead was converted. `event.payload`: `id`, `name`, `company_id` (null when the lead had no
    company), `company_created`, `contact_id`, `contact_created`, `deal_id`, `source`, `channel`, `campaign`,
    `owner_id`, `team_id`, `user_id`. Returns nothing."""


# -- module services: finance (a finance module answers; finance_bridge calls them) ----

@hookspec(firstresult=True)
def finance_create_invoice(request):
    """firstresult. Called by finance_bridge once a deal was won (later also for an accepted quote). `request`
    is a dict: `idempotency_key` (e.g. "crm-deal-42": answer a key you have seen with the invoice you made then),
    `customer` ({`company_id`, `contact_id`, `name`, `external_id`}), `currency` (ISO), `payment_terms_days`
    (int), `lines` (list of {`description`, `product_code`, `quantity`, `unit_price`, `discount`, `amount`},
    Decimals), `reference` (e.g. the deal's name) and `source` ({`kind`: "deal", `id`}). Create a draft invoice
    and return {`id` (str), `number`, `status`}, or None to let another module answer. Raise to have the
    event retried later."""


@hookspec(firstresult=True)
def finance_customer_account(customer, limit):
    """firstresult. Called for the 360° view, the timeline and the credit-hold warning on new deals. `customer`
    is a dict: `kind` ("company" or "contact"), `id`, `name`, `company_ids`, `contact_ids`. Return
    {`balances`: [{`currency`, `outstanding`, `overdue`}] (Decimals), `credit_hold` (bool), `credit_hold_reason`,
    `invoices` and `payments`: each the newest `limit` as dicts (invoices: `id`, `number`, `status`,
    `created_at` (aware UTC datetime), `issued_on`, `due_on`, `currency`, `total`, `outstanding`; payments:
    `id`, `invoice_number`, `received_at` (aware UTC datetime), `currency`, `amount`, `reference`)}, or None when
    you do not know the customer."""


@hookspec(firstresult=True)
def finance_exchange_rate(from_currency, to_currency, on):
    """firstresult. Called when finance_bridge answers `crm_exchange_rate`. Return the `Decimal` amount of
    `to_currency` that one unit of `from_currency` buys on `on` (a `datetime.date`), or None when you have no
    rate for that day."""


@hookspec
def finance_payment_received(event):
    """Event, after a payment against an invoice was recorded (finance_bridge's standalone storage).
    `event.payload`: `id`, `invoice_id`, `invoice_number`, `company_id`, `contact_id`, `currency`, `amount`
    and `invoice_outstanding` (decimal strings), `received_at`, `reference`, `user_id`. Returns nothing."""


# -- module services: projects (a project module answers; project_bridge calls them) ----

@hookspec(firstresult=True)
def project_create(request):
    """firstresult. Called by project_bridge once a won deal matched a project rule. `request` is a dict:
    `idempotency_key` ("crm-deal-42": answer a key you have seen with the project you made then), `name`,
    `customer` ({`company_id`, `contact_id`}), `start` and `due` (`datetime.date`), `template` ({`rule_id`,
    `name`}), `milestones` (list of {`name`, `due` (date), `position`}), `currency`, `amount` (Decimal) and
    `source` ({`kind`: "deal", `id`, `name`, `pipeline_id`, `owner_id`}). Create the delivery project and return
    {`id` (str), `number`, `status`}, or None to let another module answer. Raise to have the event retried."""


@hookspec(firstresult=True)
def project_status(deal_ids):
    """firstresult. Called for a deal's page (one call per page). `deal_ids`: list of CRM deal ids. Return
    {deal id: project} for the deals you made a project for, a project being a dict `id`, `number`, `name`,
    `status` ("planned", "active", "on_hold", "done", "cancelled"), `start`, `due` (dates), optionally `url`,
    and `milestones` (list of {`name`, `due` (date), `done_at` (aware UTC datetime or None), `position`});
    or None to let another module answer."""


@hookspec(firstresult=True)
def project_customer_projects(customer, limit):
    """firstresult. Called for a customer's 360° panel and timeline. `customer` is a dict: `kind` ("company" or
    "contact"), `id`, `name`, `company_ids`, `contact_ids`. Return {`open` (number of projects not done or
    cancelled), `projects`: the newest `limit` as in `project_status` plus `deal_id` and `created_at` (aware
    UTC datetime)}, or None when you do not know the customer."""


# -- module services: POS (a POS module answers; pos_bridge calls them) ----

@hookspec(firstresult=True)
def pos_purchase_history(customer, limit):
    """firstresult. Called by pos_bridge for a customer's 360° timeline. `customer` is a
    `plugins.pos_bridge.customers.PosCustomer` (`contact_ids`, `name`, `phones` in E.164, `emails`, `cards`).
    Return at most `limit` purchases, newest first, as dicts: `at` (aware UTC datetime), `store`, `receipt`,
    `total` (Decimal), `currency` (ISO 4217), optionally `items` (number of lines); or None to let another
    plugin answer (pos_bridge's own storage answers last)."""


@hookspec(firstresult=True)
def pos_purchase_totals(customer, since):
    """firstresult. Called by pos_bridge for a customer's 360° panel. `customer` as in `pos_purchase_history`,
    `since` an aware UTC datetime. Return {`count`, `spent`, `count_since`, `spent_since`}: the number of
    purchases and the amounts spent ({currency: Decimal}) of all time and since `since`; or None to let another
    plugin answer."""


@hookspec(firstresult=True)
def pos_loyalty_status(customer):
    """firstresult. Called by pos_bridge for a customer's 360° panel. `customer` as in `pos_purchase_history`.
    Return {`card`, `tier`, `points`} of the customer's loyalty card, {} when they hold none, or None to let
    another plugin answer."""


# -- module services: inventory (an inventory module answers; inventory_bridge calls them) ----

@hookspec(firstresult=True)
def inventory_availability(product_codes, warehouse):
    """firstresult. Called by inventory_bridge once for all the line items of a deal (its page, its `extras`, a
    line being saved) and for `GET /api/v1/inventory/availability`. `product_codes`: a list of distinct product
    codes; `warehouse`: a warehouse code, or None for all warehouses together. Return {code: {`name`, `unit`,
    `active` (bool), `stocked` (bool: False for a service, always available), `on_hand`, `reserved`,
    `available` (Decimals; `available` None when you do not know the stock)}} for the codes you know (leave the
    others out: they are unavailable), or None to let another plugin answer."""


@hookspec(firstresult=True)
def inventory_prices(request):
    """firstresult. Called by inventory_bridge once for all the line items of a deal, with the availability.
    `request` is a dict: `customer` ({`company_id`, `contact_id`, `name`, `external_id`}: CRM ids), `currency`
    (ISO, the deal's), `on` (a `datetime.date`) and `items` (list of {`product_code`, `quantity` (Decimal)}).
    Return a list as long as `items`: for each, {`price` (Decimal unit price for this customer and quantity),
    `currency`, `price_list` (its name)} or None when you have no price; or None to let another plugin answer."""
