"""Sequence screens: a sequence made, refused (bad rule with its position, bad quiet hours), given steps
whose form follows their kind (an e-mail step without a template and a branch jumping backwards are refused,
nothing saved), steps edited, moved and removed, the sequence activated, paused and resumed; leads enrolled
from the enrollment page and the leads list's action (only those the user may see), the enrollments list
with its filters and actions, the statistics page's numbers and rates, and who may do what."""
from __future__ import annotations

import re

from sqlalchemy import func, select

from bigledger_core.db import db
from bigledger_core.models import Message
from plugins.crm.leads.models import Lead
from plugins.crm.leads.services import create_lead
from plugins.crm.nurture.models import (
    EmailTemplate,
    Enrollment,
    EnrollmentStep,
    Sequence,
    SequenceStep,
)
from plugins.crm.nurture.services import activate, add_step, enroll
from tests.conftest import add_user, csrf_token, login

HTML = "<p>{{ lead.name }}，您好！</p>"


def english(client) -> None:
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"


def text(response) -> str:
    return response.get_data(as_text=True)


def flashes(html: str) -> str:
    """The page's alerts as plain text."""
    return " | ".join(re.sub(r"<[^>]+>|\s+", " ", m).strip()
                      for m in re.findall(r'<div class="alert[^"]*"[^>]*>(.*?)</div>', html, re.DOTALL))


def cells_of(row: str) -> list[str]:
    """The cells of a table row as plain text."""
    return [" ".join(re.sub(r"<[^>]+>", " ", c).split()) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.DOTALL)]


def new_template(name="欢迎 Welcome") -> int:
    row = EmailTemplate(name=name, subject_zh="欢迎", html_zh=HTML, subject_en="Welcome", html_en=HTML)
    db.session.add(row)
    db.session.commit()
    return row.id


def new_lead(name, email=None, owner_id=None) -> int:
    lead, _created = create_lead(db.session, Lead(name=name, email=email, owner_id=owner_id))
    db.session.commit()
    return lead.id


def one(model, **where):
    return db.session.scalars(select(model).filter_by(**where)).one()


def running_sequence(name="培育", template_id=None) -> int:
    sequence = Sequence(name=name, status="draft")
    db.session.add(sequence)
    db.session.flush()
    add_step(db.session, sequence, SequenceStep(kind="email", template_id=template_id or new_template()))
    add_step(db.session, sequence, SequenceStep(kind="wait", days=2, business_days=True))
    activate(db.session, sequence)
    db.session.commit()
    return sequence.id


def test_a_sequence_and_its_steps_are_made_on_the_screens_and_refused_when_wrong(app, client):
    add_user(app, "admin", "Admin")
    english(client)
    login(client, "admin")
    with app.app_context():
        welcome, story = new_template("欢迎 Welcome"), new_template("案例 Story")
    token = csrf_token(client, "/sequenceview/add")
    form = {"csrf_token": token, "name": "新潜客培育", "description": "", "enroll_rule": "公司规模 > > 100",
            "exit_on_qualified": "y", "quiet_start": "21:00", "quiet_end": "08:00"}
    refused = text(client.post("/sequenceview/add", data=form))
    # the form comes back with the reason under the field
    assert refused.index('id="enroll_rule"') < refused.index("enrollment rule: position 8:") < refused.index(
        'id="enroll_form"')
    refused = text(client.post("/sequenceview/add", data={**form, "enroll_rule": "", "quiet_end": "8 点"}))
    assert refused.index('id="quiet_start"') < refused.index("quiet hours end: “8 点” is not a time of day") < \
        refused.index('id="quiet_end"')
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Sequence)) == 0
    client.post("/sequenceview/add", data={**form, "enroll_rule": "公司规模 > 100 且 行业 = '科技'"})
    with app.app_context():
        sequence = one(Sequence, name="新潜客培育")
        assert (sequence.status, sequence.enroll_rule, sequence.quiet_end, sequence.exit_on_qualified,
                sequence.exit_on_converted) == ("draft", "公司规模 > 100 且 行业 = '科技'", "08:00", True, False)
        pk = sequence.id

    page = text(client.get(f"/crm/sequence/{pk}/step/add?kind=wait"))
    assert 'data-kinds="email"' in page and 'data-kinds="task wait"' in page  # the fields follow the kind
    assert "欢迎 Welcome" in page
    step = {"csrf_token": token, "kind": "email", "name": "", "template_id": ""}
    refused = text(client.post(f"/crm/sequence/{pk}/step/add", data=step))
    assert "step 1: an e-mail step needs a template" in flashes(refused)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(SequenceStep)) == 0
    # fields of other kinds sent along are not kept
    client.post(f"/crm/sequence/{pk}/step/add", data={**step, "template_id": welcome, "days": "9",
                                                      "condition": "x"})
    client.post(f"/crm/sequence/{pk}/step/add", data={"csrf_token": token, "kind": "wait", "days": "2",
                                                      "business_days": "y"})
    with app.app_context():
        first = one(SequenceStep, position=1)
        assert (first.kind, first.template_id, first.days, first.condition) == ("email", welcome, None, None)
        first_id = first.id
    backwards = {"csrf_token": token, "kind": "branch", "condition": "邮件开启 > 0", "then_step_id": first_id}
    refused = text(client.post(f"/crm/sequence/{pk}/step/add", data=backwards))
    assert "then: a branch may only go forward (to a later step)" in flashes(refused)
    bad_condition = text(client.post(f"/crm/sequence/{pk}/step/add", data={**backwards, "then_step_id": "",
                                                                           "condition": "邮件开启 >"}))
    assert "condition: position" in flashes(bad_condition)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(SequenceStep)) == 2
    client.post(f"/crm/sequence/{pk}/step/add", data={**backwards, "then_step_id": "", "name": "打开过？"})
    client.post(f"/crm/sequence/{pk}/step/add", data={"csrf_token": token, "kind": "email", "template_id": story})
    client.post(f"/crm/sequence/{pk}/step/add", data={"csrf_token": token, "kind": "task", "subject": "电话跟进",
                                                      "days": "1"})
    with app.app_context():
        steps = {s.position: s.id for s in db.session.scalars(select(SequenceStep))}
    edit = {"csrf_token": token, "kind": "branch", "name": "打开过？", "condition": "邮件开启 > 0",
            "then_step_id": steps[4], "else_step_id": steps[5]}
    client.post(f"/crm/sequence/step/{steps[3]}/edit", data=edit)
    refused = text(client.post(f"/crm/sequence/step/{steps[3]}/edit", data={**edit, "else_step_id": steps[2]}))
    assert "else: a branch may only go forward" in flashes(refused)
    with app.app_context():
        branch = db.session.get(SequenceStep, steps[3])
        assert (branch.then_step_id, branch.else_step_id) == (steps[4], steps[5])

    page = text(client.get(f"/sequenceview/show/{pk}"))
    summaries = [re.sub(r"\s+", " ", s).strip() for s in re.findall(r'class="bl-seq-step-summary">(.*?)</td>', page)]
    assert summaries == ["Send “欢迎 Welcome”", "Wait 2 business days",
                         "If 邮件开启 &gt; 0 go to step 4, else to step 5", "Send “案例 Story”",
                         "Task “电话跟进”, due in 1 days"]

    # moving the story above the branch would make the branch jump backwards: refused, nothing moves
    client.post(f"/crm/sequence/step/{steps[4]}/move", data={"csrf_token": token, "direction": "up"})
    client.post(f"/crm/sequence/step/{steps[1]}/move", data={"csrf_token": token, "direction": "down"})
    with app.app_context():
        order = db.session.scalars(select(SequenceStep.id).where(SequenceStep.active.is_(True))
                                   .order_by(SequenceStep.position)).all()
    assert order == [steps[2], steps[1], steps[3], steps[4], steps[5]]
    client.post(f"/crm/sequence/step/{steps[5]}/remove", data={"csrf_token": token})
    with app.app_context():
        removed = db.session.get(SequenceStep, steps[5])
        assert removed.active is False and db.session.get(SequenceStep, steps[3]).else_step_id is None
    assert "电话跟进" not in text(client.get(f"/sequenceview/show/{pk}"))

    client.post(f"/sequenceview/action/activate_sequences/{pk}", data={"csrf_token": token})
    with app.app_context():
        assert db.session.get(Sequence, pk).status == "active"
    client.post(f"/sequenceview/action/pause_sequences/{pk}", data={"csrf_token": token})
    with app.app_context():
        assert db.session.get(Sequence, pk).status == "paused"
    refused = text(client.post(f"/sequenceview/action/pause_sequences/{pk}", data={"csrf_token": token},
                               follow_redirects=True))
    assert "only an active sequence can be paused" in flashes(refused)
    client.post(f"/sequenceview/action/resume_sequences/{pk}", data={"csrf_token": token})
    with app.app_context():
        assert db.session.get(Sequence, pk).status == "active"


def test_an_empty_sequence_is_not_activated_and_a_stale_edit_is_refused(app, client):
    add_user(app, "admin", "Admin")
    english(client)
    login(client, "admin")
    with app.app_context():
        sequence = Sequence(name="空的", status="draft")
        db.session.add(sequence)
        db.session.commit()
        pk, version = sequence.id, sequence.version
    token = csrf_token(client, "/sequenceview/list/")
    page = text(client.post(f"/sequenceview/action/activate_sequences/{pk}", data={"csrf_token": token},
                            follow_redirects=True))
    assert "空的: steps: a sequence needs at least one step before it starts" in flashes(page)
    edit = {"csrf_token": token, "name": "空的 1", "version": version}
    client.post(f"/sequenceview/edit/{pk}", data=edit)
    page = text(client.post(f"/sequenceview/edit/{pk}", data={**edit, "name": "空的 2"}, follow_redirects=True))
    assert "changed by someone else" in flashes(page)
    with app.app_context():
        assert db.session.get(Sequence, pk).name == "空的 1"


def test_leads_are_enrolled_from_the_screens_and_the_enrollments_list_filters_and_acts(app, client):
    add_user(app, "admin", "Admin")
    english(client)
    login(client, "admin")
    with app.app_context():
        pk = running_sequence()
        wang = new_lead("王强", "wang@example.com")
        li = new_lead("李娜", "li@example.com")
        nobody = new_lead("无邮箱")
    token = csrf_token(client, "/enrollmentview/add")
    page = text(client.get(f"/enrollmentview/add?sequence_id={pk}&q=王"))
    assert "王强" in page and "李娜" not in page and f'<option value="{pk}" selected' in page
    refused = text(client.post("/enrollmentview/add", data={"csrf_token": token, "sequence_id": pk, "enroll": "1",
                                                            "lead_ids": f"{wang}, x"}))
    assert "lead ids: “x” is not a lead id" in flashes(refused)
    page = text(client.post("/enrollmentview/add", data={"csrf_token": token, "sequence_id": pk, "enroll": "1",
                                                         "lead_id": [wang], "lead_ids": f"{nobody} 99999"},
                            follow_redirects=True))
    assert "Enrolled in “培育”: 1." in flashes(page)
    assert "no e-mail address: 1; not found or not yours to see: 1" in flashes(page)
    assert "王强" in page

    # the leads list's action: the ticked leads, then the sequence
    page = text(client.post("/leadview/action_post", data={"csrf_token": token, "action": "enroll_in_sequence",
                                                           "rowid": [li, wang]}, follow_redirects=True))
    assert re.search(rf'name="lead_id" value="{li}" checked', page) and "bl-seq-enroll-form" in page
    page = text(client.post("/enrollmentview/add", data={"csrf_token": token, "sequence_id": pk, "enroll": "1",
                                                         "lead_id": [li, wang]}, follow_redirects=True))
    assert "Enrolled in “培育”: 1." in flashes(page) and "already in the sequence: 1" in flashes(page)

    # quick filters become the list's filters
    with app.app_context():
        ids = {e.lead_id: e.id for e in db.session.scalars(select(Enrollment))}
    response = client.get(f"/enrollmentview/list/?sequence={pk}&status=&reason=&lead=李")
    assert response.status_code == 302 and "_flt_0_sequence" in response.location and "lead_id=" in response.location
    page = text(client.get(response.location))
    assert "李娜" in page and "王强" not in page
    assert f'href="/leadview/show/{li}"' in page

    client.post("/enrollmentview/action_post", data={"csrf_token": token, "action": "pause_enrollments",
                                                     "rowid": [ids[wang]]})
    with app.app_context():
        assert db.session.get(Enrollment, ids[wang]).status == "paused"
    page = text(client.get(client.get("/enrollmentview/list/?status=paused").location))
    assert "王强" in page and "李娜" not in page
    client.post("/enrollmentview/action_post", data={"csrf_token": token, "action": "resume_enrollments",
                                                     "rowid": [ids[wang]]})
    client.post("/enrollmentview/action_post", data={"csrf_token": token, "action": "exit_enrollments",
                                                     "rowid": [ids[li]]})
    with app.app_context():
        assert db.session.get(Enrollment, ids[wang]).status == "active"
        assert (db.session.get(Enrollment, ids[li]).status, db.session.get(Enrollment, ids[li]).exit_reason) == (
            "exited", "manual")
    page = text(client.get(client.get("/enrollmentview/list/?reason=manual").location))
    assert "李娜" in page and "王强" not in page


def test_statistics_pages_count_and_give_rates(app, client):
    add_user(app, "admin", "Admin")
    english(client)
    login(client, "admin")
    with app.app_context():
        template_id = new_template("欢迎 Welcome")
        pk = running_sequence("培育", template_id)
        sequence = db.session.get(Sequence, pk)
        leads = [new_lead(f"潜客{n}", f"p{n}@example.com") for n in range(4)]
        enroll(db.session, sequence, leads)
        email_step = one(SequenceStep, sequence_id=pk, position=1)
        enrollments = db.session.scalars(select(Enrollment).order_by(Enrollment.id)).all()
        # four e-mails sent; three delivered; two opened, one of those clicked; one unsubscribed
        for n, enrollment in enumerate(enrollments):
            message = Message(to_address=f"p{n}@example.com", message_id=f"m{n}@example.com",
                              status="sent" if n < 3 else "failed")
            db.session.add(message)
            db.session.flush()
            db.session.add(EnrollmentStep(
                enrollment_id=enrollment.id, step_id=email_step.id, sequence_id=pk, template_id=template_id,
                message_id=message.id, outcome="sent", opened_at=message.created_at if n < 2 else None,
                clicked_at=message.created_at if n == 0 else None,
                unsubscribed_at=message.created_at if n == 2 else None))
        enrollments[2].status, enrollments[2].exit_reason = "exited", "unsubscribed"
        db.session.get(Lead, leads[1]).status = "converted"
        db.session.commit()
    page = text(client.get("/crm/nurture/statistics/"))
    row = re.search(rf'<tr data-sequence-id="{pk}">(.*?)</tr>', page, re.DOTALL).group(1)
    cells = cells_of(row)[1:]
    assert cells == ["4", "3", "4", "3 75.0%", "2 66.7%", "1 33.3%", "0 0.0%", "1 33.3%", "1 25.0%"]
    row = re.search(rf'<tr data-template-id="{template_id}">(.*?)</tr>', page, re.DOTALL).group(1)
    cells = cells_of(row)[1:]
    assert cells[2:6] == ["4", "3 75.0%", "2 66.7%", "1 33.3%"]
    page = text(client.get(f"/sequenceview/show/{pk}"))
    assert re.search(r'bl-stat-opened">2 <small class="text-muted">66.7%', page)
    assert 'id="bl-seq-enrolled">4<' in page and 'id="bl-seq-running">3<' in page


def test_who_may_see_and_do_what(app, client):
    add_user(app, "admin", "Admin")
    rep = add_user(app, "rep", "Sales Rep")
    marketing = add_user(app, "marketer", "Marketing")
    english(client)
    with app.app_context():
        pk = running_sequence()
        mine = new_lead("自己的", "mine@example.com", owner_id=marketing)
        others = new_lead("别人的", "others@example.com", owner_id=rep)
        enroll(db.session, db.session.get(Sequence, pk), [others])
        db.session.commit()
    login(client, "rep")
    token = csrf_token(client, "/leadview/list/")
    for path in ("/sequenceview/list/", "/enrollmentview/list/", "/crm/nurture/statistics/",
                 f"/crm/sequence/{pk}/step/add"):
        assert client.get(path).status_code == 403, path
    page = text(client.post("/leadview/action_post", data={"csrf_token": token, "action": "enroll_in_sequence",
                                                           "rowid": [others]}, follow_redirects=True))
    assert "You may not enroll leads in sequences" in flashes(page)
    client.get("/logout/")

    login(client, "marketer")
    token = csrf_token(client, "/enrollmentview/add")
    assert client.get("/sequenceview/list/").status_code == 200
    assert client.get(f"/crm/sequence/{pk}/step/add").status_code == 200
    page = text(client.get("/enrollmentview/list/"))
    assert "别人的" not in page  # enrollments of leads they may not see are not listed
    page = text(client.post("/enrollmentview/add", data={"csrf_token": token, "sequence_id": pk, "enroll": "1",
                                                         "lead_ids": f"{mine} {others}"}, follow_redirects=True))
    assert "Enrolled in “培育”: 1." in flashes(page) and "not found or not yours to see: 1" in flashes(page)
    with app.app_context():
        enrolled = db.session.scalars(select(Enrollment.lead_id).where(Enrollment.status == "active")).all()
        theirs = one(Enrollment, lead_id=others).id
    assert sorted(enrolled) == sorted([mine, others])
    client.post("/enrollmentview/action_post", data={"csrf_token": token, "action": "exit_enrollments",
                                                     "rowid": [theirs]})
    with app.app_context():
        assert db.session.get(Enrollment, theirs).status == "active"  # not theirs to end
    assert client.post(f"/sequenceview/delete/{pk}", data={"csrf_token": token}).status_code == 403
    with app.app_context():
        assert db.session.get(Sequence, pk) is not None
