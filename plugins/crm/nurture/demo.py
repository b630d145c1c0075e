"""Demo nurturing for `bigledger demo` (idempotent by name): bilingual e-mail templates and the running
sequence "新潜客培育 / New lead nurturing" — welcome e-mail, wait 2 business days, a customer story to
leads who opened it, then a call task for the owner — with three of the demo leads enrolled. Runs after the
demo leads (plugins/crm/leads/demo.py)."""
from __future__ import annotations

from sqlalchemy import select

from ..leads.models import Lead
from . import templates as mail_templates
from .models import EmailTemplate, Sequence, SequenceStep
from .services import activate, add_step, check_step, enroll

SEQUENCE = "新潜客培育 / New lead nurturing"
# name, subject (zh), body (zh), subject (en), body (en)
TEMPLATES = [
    ("欢迎邮件 / Welcome",
     "{{ lead.name }}，欢迎了解 BigLedger",
     ("<p>{{ lead.name }}，您好！</p>"
      "<p>感谢您关注 BigLedger ERP{% if lead.company_name %}，也感谢{{ lead.company_name }}的信任{% endif %}。"
      "财务、库存、门店收银和客户关系，一套系统就能管好。</p>"
      "<p>我是您的顾问{{ owner.name | default('BigLedger 团队') }}，有任何问题直接回复这封邮件即可。</p>"
      "<p><a href=\"https://bigledger.example.com/zh/tour\">三分钟了解 BigLedger</a></p>"),
     "Welcome to BigLedger, {{ lead.name }}",
     ("<p>Hello {{ lead.name }},</p>"
      "<p>Thank you for your interest in BigLedger ERP{% if lead.company_name %} on behalf of "
      "{{ lead.company_name }}{% endif %}. Finance, inventory, point of sale and customers in one system.</p>"
      "<p>I am {{ owner.name | default('the BigLedger team') }}, your adviser: just reply to this e-mail with "
      "any question.</p>"
      "<p><a href=\"https://bigledger.example.com/en/tour\">BigLedger in three minutes</a></p>")),
    ("客户案例 / Customer story",
     "{{ lead.name }}，看看同行如何用 BigLedger 提效",
     ("<p>{{ lead.name }}，您好！</p>"
      "<p>杭州一家贸易公司上线 BigLedger 后，月结时间从五天缩短到一天。完整案例见下方链接。</p>"
      "<p><a href=\"https://bigledger.example.com/zh/stories/mingyang\">阅读客户案例</a></p>"
      "<p>想看看在{{ lead.company_name | default('贵公司') }}会是什么样？回复邮件预约演示。</p>"
      "<p>{{ owner.name | default('BigLedger 团队') }}</p>"),
     "{{ lead.name }}, how a company like yours saves days every month",
     ("<p>Hello {{ lead.name }},</p>"
      "<p>A trading company in Hangzhou cut its month-end close from five days to one with BigLedger. "
      "Read the whole story below.</p>"
      "<p><a href=\"https://bigledger.example.com/en/stories/mingyang\">Read the customer story</a></p>"
      "<p>Curious what it would look like at {{ lead.company_name | default('your company') }}? Reply to book "
      "a demo.</p>"
      "<p>{{ owner.name | default('The BigLedger team') }}</p>")),
    ("展会邀请 / Expo invitation",
     "{{ lead.name }}，诚邀您参观 2026 春季展会",
     ("<p>{{ lead.name }}，您好！</p><p>BigLedger 将参加 2026 春季展会，欢迎到展位现场体验。</p>"
      "<p>{{ owner.name | default('BigLedger 团队') }}</p>"),
     "{{ lead.name }}, meet us at the 2026 Spring Expo",
     ("<p>Hello {{ lead.name }},</p><p>BigLedger will be at the 2026 Spring Expo: come and try it at our "
      "stand.</p><p>{{ owner.name | default('The BigLedger team') }}</p>")),
]
ENROLLED_LEADS = ("demo-lead-2", "demo-lead-3", "demo-lead-5")  # idempotency keys of the demo leads


def load(session, users) -> None:
    """Create the demo templates and the demo sequence (once) and enroll three demo leads in it."""
    marketing = users.get("demo_marketing")
    templates = {}
    for name, subject_zh, html_zh, subject_en, html_en in TEMPLATES:
        template = session.scalar(select(EmailTemplate).where(EmailTemplate.name == name))
        if template is None:
            template = EmailTemplate(name=name, subject_zh=subject_zh, html_zh=html_zh, subject_en=subject_en,
                                     html_en=html_en, marketing=True, active=True)
            mail_templates.validate(session, template)
            session.add(template)
            session.flush()
        templates[name] = template
    if session.scalar(select(Sequence.id).where(Sequence.name == SEQUENCE)) is not None:
        return
    sequence = Sequence(name=SEQUENCE, status="draft", quiet_start="21:00", quiet_end="08:00",
                        created_by_id=marketing.id if marketing else None,
                        description="新潜客先收到欢迎邮件；两个工作日后，打开过邮件的潜客再收到一封客户案例，然后由负责人电话"
                                    "跟进每一位。\nNew leads get a welcome e-mail; two business days later those "
                                    "who opened it also get a customer story, and then the owner calls each of them.")
    session.add(sequence)
    session.flush()
    welcome, story = templates["欢迎邮件 / Welcome"], templates["客户案例 / Customer story"]
    add_step(session, sequence, SequenceStep(kind="email", name="欢迎邮件 Welcome", template_id=welcome.id))
    add_step(session, sequence, SequenceStep(kind="wait", name="等两个工作日 Two business days", days=2,
                                             business_days=True))
    branch = add_step(session, sequence, SequenceStep(kind="branch", name="打开过邮件？ Opened it?",
                                                      condition="邮件开启 > 0"))
    then = add_step(session, sequence, SequenceStep(kind="email", name="客户案例 Customer story",
                                                    template_id=story.id))
    otherwise = add_step(session, sequence, SequenceStep(kind="task", name="电话跟进 Call",
                                                         subject="电话跟进新潜客 / Call the new lead", days=1))
    branch.then_step_id, branch.else_step_id = then.id, otherwise.id
    check_step(session, branch)
    activate(session, sequence)
    lead_ids = session.scalars(select(Lead.id).where(Lead.idempotency_key.in_(ENROLLED_LEADS))).all()
    if lead_ids:
        enroll(session, sequence, lead_ids, source="manual", by_id=marketing.id if marketing else None)
    session.flush()
