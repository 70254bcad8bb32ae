"""The approval console in a real browser (Debian chromium via Playwright) against a real `dlpgate serve`.

One gateway, one SMTP sink and one browser for the module (starting chromium is the slow part);
each person gets their own browser context, signed in once with password + TOTP (a TOTP code is
accepted once, so nobody signs in twice within a step). Screenshots land in DLPGATE_SCREENSHOTS
(default /tmp/dlpgate-web-shots), outside the repository.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest

from .conftest import Sink
from .test_web_support import (
    PASSWORD,
    SHOTS,
    WebGateway,
    browser,
    clean_mail,
    delivered,
    held_mail,
    link_in,
    notices_to,
    wait_for,
)

TANAKA = "tanaka@soumu.example.jp"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WebGateway, Sink, Any]]:
    tmp = tmp_path_factory.mktemp("web")
    sink = Sink()
    sink.start()
    gw = WebGateway(tmp, sink)
    try:
        gw.start()
        SHOTS.mkdir(parents=True, exist_ok=True)
        with browser() as b:
            yield gw, sink, b
    finally:
        gw.stop()
        sink.stop()


class People:
    """One signed-in browser context per login, made on first use."""

    def __init__(self, gw: WebGateway, b: Any) -> None:
        self.gw, self.b = gw, b
        self.pages: dict[str, Any] = {}
        self.dialogs: list[str] = []

    def new_page(self, *, phone: bool = False) -> Any:
        kw: dict[str, Any] = {"locale": "ja-JP"}
        if phone:
            kw.update(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True)
        else:
            kw.update(viewport={"width": 1280, "height": 900})
        page = self.b.new_context(**kw).new_page()
        page.set_default_timeout(30_000)
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        return page

    def sign_in_on(self, page: Any, login: str, *, totp: str | None = None, password: str | None = None) -> None:
        page.fill("input[name=login]", login)
        page.fill("input[name=password]", password or PASSWORD.format(login=login))
        if totp is None and login in self.gw.secrets and self.gw.secrets[login]:
            totp = pyotp.TOTP(self.gw.secrets[login]).now()
        if totp:
            page.fill("input[name=totp]", totp)
        page.click("form[action='/signin'] button[type=submit]")
        page.wait_for_load_state()

    def __call__(self, login: str, *, phone: bool = False) -> Any:
        if login not in self.pages:
            page = self.new_page(phone=phone)
            page.goto(self.gw.url + "/")
            assert "/signin" in page.url
            self.sign_in_on(page, login)
            assert "/signin" not in page.url, page.inner_text("main")
            self.pages[login] = page
        return self.pages[login]


@pytest.fixture(scope="module")
def people(env: tuple[WebGateway, Sink, Any]) -> People:
    gw, _, b = env
    return People(gw, b)


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def decide_in_browser(page: Any, gw: WebGateway, msg_id: str, decision: str, reason: str = "") -> str:
    """Open the message page, fill the form, confirm once; the result text."""
    page.goto(f"{gw.url}/m/{msg_id}")
    form = page.locator(f"form:has(input[name=decision][value={decision}])")
    if reason:
        form.locator("input[name=reason]").fill(reason)
    form.locator("button[type=submit]").click()
    page.wait_for_load_state()
    assert page.locator("form[action='/confirm']").count() == 1  # one confirmation step, nothing done yet
    assert gw.state_of(msg_id) == "held"
    shot(page, f"confirm-{decision}")
    page.click("form[action='/confirm'] button[type=submit]")
    page.wait_for_load_state()
    return str(page.inner_text("main"))


def test_sign_in_see_open_release_delivered_once(env: tuple[WebGateway, Sink, Any], people: People) -> None:
    gw, sink, _ = env
    raw, numbers = held_mail(TANAKA, "住民名簿の送付（release）", seed=21)
    gw.send(TANAKA, ["partner@example.com"], raw)
    msg = gw.message("住民名簿の送付（release）")
    assert msg["state"] == "held" and msg["approvals_required"] == 1
    # the approval request links to the message page; following the link decides nothing
    def request() -> list[tuple[str, str]]:
        return [n for n in notices_to(sink, "kacho@example.jp") if "住民名簿の送付（release）" in n[0]]

    _, text = wait_for(request, timeout=60)[0]
    assert link_in(text, gw.url) == f"{gw.url}/m/{msg['id']}"
    page = people("kacho")
    page.goto(link_in(text, gw.url))
    assert "住民名簿の送付（release）" in page.inner_text("h1") and gw.state_of(msg["id"]) == "held"
    page.goto(gw.url + "/approvals")
    row = page.locator("table.list tr", has_text="住民名簿の送付（release）")
    assert row.count() == 1
    assert "example.com" in row.inner_text()
    shot(page, "approvals")
    row.locator("a").click()
    page.wait_for_load_state()
    assert f"/m/{msg['id']}" in page.url
    text = page.inner_text("main")
    for must in ("エンベロープ", "検出内容", "パート", "監査ログ", "meibo.csv", TANAKA, "承認の状況"):
        assert must in text, must
    html = page.content()
    for n in numbers:
        assert n not in html, "a full identifier reached the page"
    shot(page, "message")
    result = decide_in_browser(page, gw, msg["id"], "release", "確認済み")
    assert "承認しました" in result
    wait_for(lambda: delivered(sink, "住民名簿の送付（release）"), timeout=60)
    time.sleep(1.0)  # a duplicate would arrive within this
    copies = delivered(sink, "住民名簿の送付（release）")
    assert len(copies) == 1 and copies[0].rcpt_tos == ["partner@example.com"]
    # the decision is the same audited decision as one from the CLI: by login kacho, via web
    trail = gw.call("audit.export", {"id": msg["id"]})
    released = [r for r in trail if r["event"] in ("released", "approved")]
    assert released and "kacho" in json.dumps(released, ensure_ascii=False)
    assert '"via": "web"' in json.dumps(released, ensure_ascii=False)
    # the release form is gone; a replayed confirmation nonce does nothing
    page.goto(f"{gw.url}/m/{msg['id']}")
    assert page.locator("form:has(input[name=decision])").count() == 0


def test_reject_with_reason_tells_the_sender(env: tuple[WebGateway, Sink, Any], people: People) -> None:
    gw, sink, _ = env
    raw, _ = held_mail(TANAKA, "給与データ（reject）", seed=22)
    gw.send(TANAKA, ["partner@example.com"], raw)
    msg = gw.message("給与データ（reject）")
    page = people("kacho")
    result = decide_in_browser(page, gw, msg["id"], "reject", "外部への送付は禁止です")
    assert "却下しました" in result
    assert gw.state_of(msg["id"]) == "rejected"

    def told() -> list[tuple[str, str]]:
        return [n for n in notices_to(sink, TANAKA) if "却下" in n[0] and "給与データ" in n[0]]

    subject, text = wait_for(told, timeout=60)[0]
    assert "外部への送付は禁止です" in text and "kacho@example.jp" in text
    assert not delivered(sink, "給与データ（reject）")


def test_reject_needs_a_reason_even_without_the_browser_check(env: tuple[WebGateway, Sink, Any],
                                                             people: People) -> None:
    gw, _, _ = env
    raw, _ = held_mail(TANAKA, "理由なし却下", seed=23)
    gw.send(TANAKA, ["partner@example.com"], raw)
    msg = gw.message("理由なし却下")
    page = people("kacho")
    page.goto(f"{gw.url}/m/{msg['id']}")
    form = page.locator("form:has(input[name=decision][value=reject])")
    form.locator("input[name=reason]").evaluate("e => e.removeAttribute('required')")
    form.locator("button[type=submit]").click()
    page.wait_for_load_state()
    assert page.locator("form[action='/confirm']").count() == 0
    assert "理由" in page.inner_text("main")
    assert gw.state_of(msg["id"]) == "held"


def test_two_person_release(env: tuple[WebGateway, Sink, Any], people: People) -> None:
    gw, sink, _ = env
    raw, _ = held_mail(TANAKA, "全職員名簿（二人承認）", n=120, seed=24)
    gw.send(TANAKA, ["partner@example.com"], raw)
    msg = gw.message("全職員名簿（二人承認）")
    assert msg["approvals_required"] == 2, msg
    first = people("kacho")
    result = decide_in_browser(first, gw, msg["id"], "release")
    assert "1 / 2" in result
    assert gw.state_of(msg["id"]) == "held" and not delivered(sink, "全職員名簿（二人承認）")
    first.goto(f"{gw.url}/m/{msg['id']}")
    assert first.locator("form:has(input[name=decision])").count() == 0  # the same person cannot count twice
    assert "承認 1 / 2" in first.inner_text("main")
    second = people("bucho", phone=True)  # the second approver decides from a phone
    second.goto(gw.url + "/approvals")
    assert second.locator("table.list tr", has_text="全職員名簿（二人承認）").count() == 1
    shot(second, "approvals-phone")
    second.goto(f"{gw.url}/m/{msg['id']}")
    shot(second, "message-phone")
    result = decide_in_browser(second, gw, msg["id"], "release")
    assert "承認しました" in result
    wait_for(lambda: delivered(sink, "全職員名簿（二人承認）"), timeout=60)
    time.sleep(1.0)
    assert len(delivered(sink, "全職員名簿（二人承認）")) == 1
    second.goto(f"{gw.url}/m/{msg['id']}")
    shot(second, "message-two-person-done")


def test_sender_recalls_delayed_mail_from_the_notice_link(env: tuple[WebGateway, Sink, Any],
                                                        people: People) -> None:
    gw, sink, _ = env
    gw.send(TANAKA, ["partner@example.com"], clean_mail(TANAKA, "打ち合わせの件（取り消し）"))
    msg = [r for r in gw.call("outbox.list", {}) if r["subject"] == "打ち合わせの件（取り消し）"][0]

    def notice() -> list[tuple[str, str]]:
        return [n for n in notices_to(sink, TANAKA) if "送信待ち" in n[0] and "打ち合わせの件" in n[0]]

    _, text = wait_for(notice, timeout=60)[0]
    link = link_in(text, gw.url)
    assert link == gw.url + "/mine"
    page = people.new_page(phone=True)
    page.goto(link)  # the link leads to a sign-in, it decides nothing
    assert "/signin" in page.url and gw.state_of(msg["id"]) == "delayed"
    people.sign_in_on(page, "tanaka")  # a sender only: no TOTP needed under require_totp = "approvers"
    assert page.url.endswith("/mine"), page.inner_text("main")
    row = page.locator("tr", has_text="打ち合わせの件（取り消し）")
    assert row.count() == 1
    shot(page, "mine-phone")
    row.locator("button").click()
    page.wait_for_load_state()
    assert gw.state_of(msg["id"]) == "delayed"  # the confirmation page first
    page.click("form[action='/confirm'] button[type=submit]")
    page.wait_for_load_state()
    assert "取り消しました" in page.inner_text("main")
    assert gw.state_of(msg["id"]) == "recalled"
    assert not delivered(sink, "打ち合わせの件（取り消し）")


def test_unrouted_supervisor_sees_nothing_and_forged_posts_are_refused(
        env: tuple[WebGateway, Sink, Any], people: People) -> None:
    gw, _, b = env
    raw, _ = held_mail(TANAKA, "総務の名簿（他部署からは見えない）", seed=25)
    gw.send(TANAKA, ["partner@example.com"], raw)
    msg = gw.message("総務の名簿（他部署からは見えない）")
    page = people("jinji")
    page.goto(gw.url + "/approvals")
    assert "総務の名簿" not in page.content()
    assert "承認を待っているメールはありません" in page.inner_text("main")
    resp = page.goto(f"{gw.url}/m/{msg['id']}")
    assert resp.status == 403 and "総務の名簿" not in page.content()
    # jinji's own valid CSRF token gets as far as the authority, which refuses (routing)
    csrf = page.locator("form[action='/signout'] input[name=csrf]").get_attribute("value")
    r = page.request.post(f"{gw.url}/m/{msg['id']}/decide", form={"csrf": csrf, "decision": "release"})
    assert r.status == 403
    # kacho's session without the token, with a wrong one: refused before anything runs
    kacho = people("kacho")
    for form in ({"decision": "release"}, {"decision": "release", "csrf": "forged"}):
        r = kacho.request.post(f"{gw.url}/m/{msg['id']}/decide", form=form)
        assert r.status == 403 and "不正な送信" in r.text()
        r = kacho.request.post(f"{gw.url}/confirm", form={**form, "nonce": "x"})
        assert r.status == 403
    # a page on another origin auto-posting a form: SameSite=Strict keeps the cookie home
    evil = kacho.context.new_page()
    evil.set_content(f"""<form id=f method=post action="{gw.url}/m/{msg['id']}/decide">
        <input name=decision value=release><input name=csrf value=guess></form>""")
    with evil.expect_navigation():
        evil.evaluate("document.getElementById('f').submit()")
    assert "/signin" in evil.url or "不正な送信" in evil.content()
    evil.close()
    assert gw.state_of(msg["id"]) == "held"
    # a plain link from another site (webmail) reaches the signed-in page after one same-site reload
    webmail = kacho.context.new_page()
    webmail.set_content(f'<a id=l href="{gw.url}/m/{msg["id"]}">link</a>')
    webmail.click("#l")
    webmail.wait_for_url(f"{gw.url}/m/{msg['id']}")
    webmail.wait_for_selector("h1.subject")
    assert "総務の名簿" in webmail.inner_text("h1") and webmail.locator("form[action='/signout']").count() == 1
    webmail.close()
    refusals = [r for r in gw.call("audit.export", {"id": msg["id"]}) if r["event"] == "refused"]
    assert refusals, "the authority's refusal is audited"


def test_hostile_subject_and_file_name_render_as_text(env: tuple[WebGateway, Sink, Any], people: People) -> None:
    gw, _, _ = env
    subject = "<img src=x onerror=alert(1)>"
    raw, _ = held_mail(TANAKA, subject, seed=26, filename='"><svg onload=alert(2)>.csv')
    gw.send(TANAKA, ["partner@example.com"], raw)
    msg = gw.message(subject)
    page = people("kacho")
    before = len(people.dialogs)
    page.goto(gw.url + "/approvals")
    assert page.locator("a", has_text=subject).count() == 1  # the text, shown as text
    assert page.locator("img[src=x]").count() == 0
    page.goto(f"{gw.url}/m/{msg['id']}")
    assert subject in page.inner_text("h1")
    assert page.locator("img[src=x], svg").count() == 0
    assert "<svg onload=alert(2)>" in page.inner_text("main")
    shot(page, "message-hostile")
    page.wait_for_timeout(300)
    assert len(people.dialogs) == before, people.dialogs


def test_wrong_totp_and_bad_passwords_lock_the_account(env: tuple[WebGateway, Sink, Any], people: People) -> None:
    gw, _, _ = env
    page = people.new_page()
    page.goto(gw.url + "/signin")
    good = pyotp.TOTP(gw.secrets["sato"]).now()
    wrong = f"{(int(good) + 1) % 1_000_000:06d}"
    people.sign_in_on(page, "sato", totp=wrong)  # right password, wrong code
    assert "サインインできませんでした" in page.inner_text("main")
    people.sign_in_on(page, "sato", password="not the password", totp=good)
    people.sign_in_on(page, "sato", password="still not it", totp=good)
    assert "ロック" in page.inner_text("main")
    shot(page, "signin-locked")
    people.sign_in_on(page, "sato", totp=good)  # now even the right password and code are refused
    assert "/signin" in page.url and "ロック" in page.inner_text("main")
    assert page.locator("form[action='/signout']").count() == 0


def test_headers_cookies_language_and_sign_out(env: tuple[WebGateway, Sink, Any], people: People) -> None:
    gw, _, _ = env
    raw, _ = held_mail(TANAKA, "管理者の検索用", seed=28)
    gw.send(TANAKA, ["partner@example.com"], raw)
    page = people("kanri")  # an administrator
    resp = page.goto(gw.url + "/admin")
    h = resp.headers
    assert "frame-ancestors 'none'" in h["content-security-policy"]
    assert "unsafe-inline" not in h["content-security-policy"] and "script-src" not in h["content-security-policy"]
    assert h["x-frame-options"] == "DENY" and h["cache-control"] == "no-store"
    cookies = page.context.cookies()
    assert [c["name"] for c in cookies] == ["dlpgate_session"]
    c = cookies[0]
    assert c["httpOnly"] and c["sameSite"] == "Strict"
    assert "kanri" not in c["value"]
    assert page.locator("script").count() == 0
    shot(page, "admin")
    page.fill("input[name=sender]", TANAKA)
    page.select_option("select[name=state]", "all")
    page.click("form[action='/admin'] button[type=submit]")
    page.wait_for_load_state()
    assert "管理者の検索用" in page.inner_text("main")
    # a decision witnesses the chain head (a fresh store has none before its first decision or minute)
    decide_in_browser(people("kacho"), gw, gw.message("管理者の検索用")["id"], "reject", "検索テスト")
    page.click("form[action='/admin/verify'] button")
    page.wait_for_load_state()
    assert "監査ログは正常です" in page.inner_text("main")
    with page.expect_download() as dl:
        page.click("form[action='/admin/audit.json'] button")
    lines = Path(dl.value.path()).read_text(encoding="utf-8").splitlines()
    assert lines and all("event" in json.loads(x) for x in lines)
    # English on a switch, Japanese by default
    page.click("form[action='/lang'] button")
    page.wait_for_load_state()
    assert "Administration" in page.inner_text("main")
    shot(page, "admin-en")
    page.click("form[action='/lang'] button")
    page.wait_for_load_state()
    # a non-admin gets no admin page
    tanaka_page = people.pages.get("kacho") or people("kacho")
    assert tanaka_page.goto(gw.url + "/admin").status == 403
    # sign out: the session is gone server-side too
    page.click("form[action='/signout'] button")
    page.wait_for_load_state()
    assert "サインアウトしました" in page.inner_text("main")
    page.goto(gw.url + "/approvals")
    assert "/signin" in page.url
    people.pages.pop("kanri")


def test_console_requests_leave_no_identifier_in_the_log(env: tuple[WebGateway, Sink, Any]) -> None:
    gw, _, _ = env
    raw, numbers = held_mail(TANAKA, "ログ確認", seed=27)
    gw.send(TANAKA, ["partner@example.com"], raw)
    msg = gw.message("ログ確認")
    for path in (f"/m/{msg['id']}", "/m/" + numbers[0], "/admin?" + urllib.parse.urlencode({"sender": numbers[1]})):
        with urllib.request.urlopen(f"{gw.url}{path}", timeout=10) as r:  # not signed in: to the sign-in page
            assert "/signin" in r.url
    log = gw.log.read_text(encoding="utf-8", errors="replace")
    for n in numbers:
        assert n not in log
