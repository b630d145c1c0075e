"""Inbound mail: parsing real .eml files, and fetching them from a real IMAP server (Dovecot)."""
from __future__ import annotations

import base64
import json
import re
import socket
import struct
import zlib
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bigledger_core.mail.imap import MailboxError, fetch_since, mark_seen
from bigledger_core.mail.inbound import MAX_MESSAGE_BYTES, Attachment, parse_message

MAIL = Path(__file__).parent / "data" / "mail"

PDF = (b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
       b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\n"
       b"trailer << /Root 1 0 R >>\n%%EOF\n")


def png_1x1() -> bytes:
    """The one-pixel PNG image attached to the test messages."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00\xc8\x10\x2e")) + chunk(b"IEND", b""))


def load(name: str) -> bytes:
    return (MAIL / name).read_bytes()


def crlf(raw: bytes) -> bytes:
    """The message as it travels over IMAP: every line ending CRLF."""
    return re.sub(rb"\r\n|\r|\n", b"\r\n", raw)


# --- parsing ---------------------------------------------------------------------------------------


def test_utf8_message_decodes_subject_people_and_both_bodies():
    message = parse_message(load("utf8_alternative.eml"))
    assert message.subject == "回复：第三季度报价单确认"
    assert message.sender == ("李明", "li.ming@huaxin-trading.cn")
    assert message.to == (("销售部", "sales@bigledger.example"), ("Wang Fang", "wang.fang@bigledger.example"))
    assert message.cc == (("财务 张伟", "zhang.wei@huaxin-trading.cn"),)
    assert "我们已收到贵公司的第三季度报价单，价格和交货期均已确认。" in message.text
    assert "请尽快安排合同签署。" in message.text
    assert "<b>" not in message.text
    assert message.html is not None
    assert "我们已收到贵公司的<b>第三季度报价单</b>，价格和交货期均已确认。" in message.html
    assert message.attachments == ()


def test_utf8_message_keeps_thread_headers_and_date_in_utc():
    message = parse_message(load("utf8_alternative.eml"))
    assert message.message_id == "20240514083000.4711@mail.huaxin-trading.cn"
    assert message.in_reply_to == "quote-2024-0512@bigledger.example"
    assert message.references == ("rfq-2024-0501@bigledger.example", "quote-2024-0512@bigledger.example")
    assert message.date == datetime(2024, 5, 14, 8, 30, tzinfo=UTC)
    assert message.date is not None and message.date.tzinfo is UTC


def test_gb2312_label_keeps_gbk_only_characters():
    message = parse_message(load("gb2312_qp.eml"))
    assert message.subject == "镕达公司订单确认"
    assert message.sender == ("朱镕", "zhu.rong@rongda.com.cn")
    assert message.to == (("王经理", "wang@bigledger.example"),)
    assert "朱镕先生已经确认订单，陈喆会在周五前把样品寄到贵司。" in message.text
    assert "\ufffd" not in message.text + message.subject


def test_gbk_message_lists_attachments_with_decoded_names_and_exact_bytes():
    message = parse_message(load("gbk_base64_attachment.eml"))
    assert message.subject == "报价单及公司标志"
    assert message.sender == ("张伟", "zhang.wei@huaxin-trading.cn")
    assert message.text.strip() == "附件是最新的报价单（PDF）和我们公司的标志，请查收。"
    assert message.html is None
    assert message.attachments == (
        Attachment(filename="报价单.pdf", content_type="application/pdf", data=PDF),
        Attachment(filename="公司标志.png", content_type="image/png", data=png_1x1()),
    )


def test_html_only_message_gets_readable_text():
    message = parse_message(load("html_only.eml"))
    assert message.subject == "发货通知：SO-2024-0518"
    assert message.html is not None and "<h1>发货通知</h1>" in message.html
    lines = message.text.splitlines()
    assert lines[0] == "发货通知"
    assert "您的订单 SO-2024-0518 已于今天发货。" in lines
    assert "- 商品：办公椅 × 20" in lines
    assert "- 物流：顺丰速运" in lines
    assert "查询物流请访问 物流查询 (https://tracking.example.cn/SO-2024-0518)。" in lines
    assert "此致 敬礼" in lines and "客服中心" in lines
    for hidden in ("<", "alert", "color: #333", "通知\n发货通知", "&nbsp;"):
        assert hidden not in message.text


def test_unknown_charset_label_does_not_raise_and_reads_utf8():
    message = parse_message(load("bad_charset.eml"))
    assert message.text.strip() == "这封邮件的字符集标签是错的，但内容其实是 UTF-8。"
    assert message.subject == "字符集错误测试"
    assert message.sender == ("Legacy System", "noreply@legacy.example.com")


def test_wrong_charset_label_is_decoded_with_replacement_characters():
    raw = (b"From: a@example.com\nSubject: wrong label\nContent-Type: text/plain; charset=utf-8\n"
           b"Content-Transfer-Encoding: 8bit\n\nok \xff\xfe\xfd end\n")
    message = parse_message(raw)
    assert message.text.startswith("ok ") and message.text.rstrip().endswith(" end")
    assert "\ufffd" in message.text


def test_missing_message_id_gets_a_stable_id():
    raw = load("no_message_id.eml")
    first, again = parse_message(raw), parse_message(raw)
    assert re.fullmatch(r"sha256-[0-9a-f]{64}@bigledger\.local", first.message_id)
    assert first.message_id == again.message_id
    assert parse_message(crlf(raw)).message_id == first.message_id
    assert parse_message(raw.replace(b"11:45:00", b"11:46:00")).message_id != first.message_id
    assert first.subject == "合同扫描件"
    assert first.text.strip() == "请把合同的盖章扫描件发给我，谢谢。"


def test_nested_multiparts_find_the_bodies_and_every_attachment():
    message = parse_message(load("nested_multipart.eml"))
    assert message.subject == "转发：询价及产品图片"
    assert message.text.strip() == "请看下面的产品图片和报价表。"
    assert message.html is not None and 'alt="打印机"' in message.html
    inline, sheet, forwarded = message.attachments
    assert (inline.filename, inline.content_type, inline.data) == ("attachment-1", "image/png", png_1x1())
    assert (sheet.filename, sheet.content_type, sheet.data) == (
        "价格表.csv", "application/vnd.ms-excel", b"name,price\nprinter,1999\n")
    assert forwarded.content_type == "message/rfc822"
    original = parse_message(forwarded.data)
    assert original.subject == "询价：打印机"
    assert original.message_id == "rfq-2024-0501@bigledger.example"
    assert "请报 500 台打印机的价格" in original.text


def test_raw_8bit_headers_and_split_encoded_words_are_decoded():
    utf8_name = "报价单".encode()
    split_subject = " ".join(
        f"=?utf-8?B?{base64.b64encode(part).decode()}?=" for part in (utf8_name[:4], utf8_name[4:])
    )
    raw = (b"From: " + "王芳".encode() + b" <Wang.Fang@Example.CN>\n"
           b"To: " + "李四".encode("gbk") + b" <li.si@example.cn>\n"
           b"Subject: " + split_subject.encode() + b"\n\nbody\n")
    message = parse_message(raw)
    assert message.sender == ("王芳", "wang.fang@example.cn")
    assert message.to == (("李四", "li.si@example.cn"),)
    assert message.subject == "报价单"


def test_message_without_body_parses():
    message = parse_message(b"From: Ops <ops@example.com>\r\nSubject: ping\r\nDate: not a date\r\n\r\n")
    assert message.subject == "ping"
    assert message.text == ""
    assert message.html is None
    assert message.date is None
    assert message.attachments == ()
    assert message.message_id.startswith("sha256-")


def test_payload_is_json_safe_and_leaves_out_attachment_content():
    payload = parse_message(load("gbk_base64_attachment.eml")).as_payload()
    decoded = json.loads(json.dumps(payload, ensure_ascii=False))
    assert decoded == payload
    assert payload["date"] == "2024-05-16T02:00:00+00:00"
    assert payload["sender"] == ["张伟", "zhang.wei@huaxin-trading.cn"]
    assert payload["attachments"] == [
        {"filename": "报价单.pdf", "content_type": "application/pdf", "size": len(PDF)},
        {"filename": "公司标志.png", "content_type": "image/png", "size": len(png_1x1())},
    ]
    assert set(payload) == {"message_id", "in_reply_to", "references", "sender", "to", "cc", "subject",
                            "date", "text", "html", "attachments", "bounce"}
    assert payload["bounce"] is None  # an ordinary mail, not a delivery report


def test_empty_input_is_refused():
    with pytest.raises(ValueError, match="empty"):
        parse_message(b"")
    with pytest.raises(ValueError, match="empty"):
        parse_message(b"\r\n\r\n")


def test_input_that_is_not_an_email_is_refused():
    with pytest.raises(ValueError, match="not an e-mail"):
        parse_message(png_1x1())
    with pytest.raises(ValueError, match="not an e-mail"):
        parse_message(b"<html><body>hello</body></html>")


def test_oversize_message_is_refused():
    raw = b"From: a@example.com\nSubject: big\n\n" + b"x" * MAX_MESSAGE_BYTES
    with pytest.raises(ValueError, match=f"larger than {MAX_MESSAGE_BYTES} bytes"):
        parse_message(raw)


# --- IMAP against a real server ------------------------------------------------------------------

THREE = ("utf8_alternative.eml", "gb2312_qp.eml", "gbk_base64_attachment.eml")
SUBJECTS = ["回复：第三季度报价单确认", "镕达公司订单确认", "报价单及公司标志"]


@pytest.fixture
def inbox(imap_server):
    for name in THREE:
        imap_server.append(load(name))
    return imap_server


def test_fetch_since_zero_returns_every_message_in_uid_order(inbox):
    uidvalidity, messages = fetch_since(inbox.settings, 0, None)
    assert uidvalidity > 0
    uids = [uid for uid, _ in messages]
    assert uids == sorted(uids) and len(uids) == 3
    assert [raw for _, raw in messages] == [crlf(load(name)) for name in THREE]
    assert [parse_message(raw).subject for _, raw in messages] == SUBJECTS


def test_fetch_since_the_last_uid_returns_nothing_new(inbox):
    uidvalidity, messages = fetch_since(inbox.settings, 0, None)
    last = messages[-1][0]
    assert fetch_since(inbox.settings, last, uidvalidity) == (uidvalidity, [])
    assert fetch_since(inbox.settings, last + 10, uidvalidity) == (uidvalidity, [])
    _, newer = fetch_since(inbox.settings, messages[0][0], uidvalidity)
    assert [uid for uid, _ in newer] == [uid for uid, _ in messages[1:]]
    inbox.append(load("html_only.eml"))
    _, fresh = fetch_since(inbox.settings, last, uidvalidity)
    assert len(fresh) == 1 and fresh[0][0] > last
    assert parse_message(fresh[0][1]).subject == "发货通知：SO-2024-0518"


def test_fetch_since_honours_the_limit(inbox):
    _, first = fetch_since(inbox.settings, 0, None, limit=2)
    assert [parse_message(raw).subject for _, raw in first] == SUBJECTS[:2]
    _, rest = fetch_since(inbox.settings, first[-1][0], None, limit=2)
    assert [parse_message(raw).subject for _, raw in rest] == SUBJECTS[2:]


def test_fetching_leaves_messages_unread_until_marked_seen(inbox):
    _, messages = fetch_since(inbox.settings, 0, None)
    assert inbox.seen_uids() == set()
    chosen = [messages[0][0], messages[2][0]]
    mark_seen(inbox.settings, chosen)
    assert inbox.seen_uids() == set(chosen)
    mark_seen(inbox.settings, [])
    assert inbox.seen_uids() == set(chosen)


def test_a_new_uidvalidity_starts_again_from_the_first_message(inbox):
    uidvalidity, messages = fetch_since(inbox.settings, 0, None)
    last = messages[-1][0]
    again_validity, again = fetch_since(inbox.settings, last, uidvalidity + 1)
    assert again_validity == uidvalidity
    assert again == messages


def test_wrong_password_raises_mailbox_error_naming_the_host(imap_server):
    settings = replace(imap_server.settings, password="not-the-password")
    with pytest.raises(MailboxError, match=re.escape(f"{settings.host}:{settings.port}")) as caught:
        fetch_since(settings, 0, None)
    assert "login failed" in str(caught.value)
    assert "\n" not in str(caught.value)
    with pytest.raises(MailboxError, match=r"login failed .*127\.0\.0\.1"):  # non-ASCII: AUTHENTICATE PLAIN
        fetch_since(replace(settings, password="错误的密码"), 0, None)


def test_missing_mailbox_raises_mailbox_error_naming_it(imap_server):
    settings = replace(imap_server.settings, mailbox="客户/不存在")
    with pytest.raises(MailboxError, match="客户/不存在") as caught:
        fetch_since(settings, 0, None)
    assert settings.host in str(caught.value)


def test_unreachable_server_raises_mailbox_error_naming_the_host(imap_server):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    settings = replace(imap_server.settings, port=closed_port)
    with pytest.raises(MailboxError, match=re.escape(f"cannot connect to IMAP server 127.0.0.1:{closed_port}")):
        fetch_since(settings, 0, None)
